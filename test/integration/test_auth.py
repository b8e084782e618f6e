"""Client authentication (trust, plain, md5, scram-sha-256; plain / md5 / SCRAM secrets in the
auth_file), server login as md5 and SCRAM users, admin console access rules."""

import psycopg
import pytest

import harness

AUTH_TYPES = ["trust", "plain", "md5", "scram-sha-256"]


def raw_login(p, user, password, db="appdb"):
    return harness.RawClient(p.port).startup(user, db, password)


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
@pytest.mark.parametrize("user", ["md5user", "scramuser"])
def test_auth_ok(pooler_factory, auth_type, user):
    """Each client auth method logs in with the right password (psycopg) and reaches the server
    as the same user, whose own server-side method is md5 (md5user) or SCRAM (scramuser)."""
    p = pooler_factory(settings={"auth_type": auth_type})
    password = False if auth_type == "trust" else harness.PASSWORDS[user]
    with p.connect(user=user, password=password) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == user


@pytest.mark.parametrize("auth_type,user,secret_kind", [
    ("plain", "md5user", "md5"),
    ("md5", "md5user", "md5"),
    ("md5", "scramuser", "server-scram"),
    ("scram-sha-256", "scramuser", "server-scram"),
])
def test_auth_hashed_secret(pooler_factory, pg, auth_type, user, secret_kind):
    """auth_file with md5 or SCRAM secrets instead of passwords: the client logs in with its
    password and the pooler logs in to the server with the stored secret (the SCRAM secret is the
    server's own verifier, as SCRAM pass-through requires)."""
    secret = (harness.md5_secret(user, harness.PASSWORDS[user]) if secret_kind == "md5"
              else pg.scram_verifier(user))
    p = pooler_factory(settings={"auth_type": auth_type},
                       userlist={user: secret, "pgadmin": "adminpass"})
    r = raw_login(p, user, harness.PASSWORDS[user])
    assert r.query("SELECT current_user") == [(user,)]
    r.close()
    with pytest.raises(harness.ServerError) as ei:
        raw_login(p, user, "wrong-" + harness.PASSWORDS[user])
    assert ei.value.sqlstate == harness.sqlstate("28P01")


def test_scram_cannot_use_md5_secret(pooler_factory):
    """auth_type=scram-sha-256 with only an md5 secret for the user: login fails cleanly."""
    p = pooler_factory(settings={"auth_type": "scram-sha-256"},
                       userlist={"md5user": harness.md5_secret("md5user", "md5pass"),
                                 "pgadmin": "adminpass"})
    with pytest.raises(harness.ServerError) as ei:
        raw_login(p, "md5user", "md5pass")
    assert ei.value.sqlstate == harness.sqlstate("28P01")
    assert p.running()


@pytest.mark.parametrize("auth_type", ["plain", "md5", "scram-sha-256"])
def test_wrong_password(pooler_factory, auth_type):
    """A wrong password gets an ErrorResponse (28P01 for pgpilot), the pooler stays up and the
    right password still works."""
    p = pooler_factory(settings={"auth_type": auth_type})
    with pytest.raises(harness.ServerError) as ei:
        raw_login(p, "md5user", "not-the-password")
    assert ei.value.sqlstate == harness.sqlstate("28P01")
    assert "authentication failed" in ei.value.message
    with pytest.raises(psycopg.OperationalError):
        p.connect(password="not-the-password")
    r = raw_login(p, "md5user", "md5pass")
    assert r.query("SELECT 1") == [("1",)]


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
def test_unknown_user(pooler_factory, auth_type):
    """A user missing from auth_file is refused for every auth type (trust included)."""
    p = pooler_factory(settings={"auth_type": auth_type})
    with pytest.raises(harness.ServerError) as ei:
        raw_login(p, "nobody", "whatever")
    if harness.is_pgpilot():
        assert ei.value.sqlstate in ("28P01", "28000")
    else:
        assert ei.value.sqlstate == "08P01"
    if auth_type != "trust":
        # with a password method the answer must not reveal whether the user exists
        assert "authentication failed" in ei.value.message
    assert p.running()


@pytest.mark.parametrize("user", ["md5user", "scramuser"])
def test_server_login_forced_user(pooler_factory, user):
    """[databases] user=/password=: the pooler logs in to PostgreSQL as an md5 or a SCRAM user
    whatever the client is."""
    p = pooler_factory(databases={
        "forced": f"host=127.0.0.1 port={{pgport}} dbname=appdb user={user} "
                  f"password={harness.PASSWORDS[user]}"})
    other = "scramuser" if user == "md5user" else "md5user"
    with p.connect(dbname="forced", user=other) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == user


def test_server_login_failure_reported(pooler_factory):
    """The auth_file has a password PostgreSQL does not accept: the client passes the pooler's
    auth (trust) but gets an error when the server login fails; the pooler stays up."""
    ul = dict(harness.PASSWORDS, scramuser="wrong-server-password")
    p = pooler_factory(settings={"auth_type": "trust", "query_wait_timeout": "5"}, userlist=ul)
    with pytest.raises(psycopg.Error):
        with p.connect(user="scramuser", password=False) as c:
            c.execute("SELECT 1")
    assert p.running()
    with p.connect(user="md5user", password=False) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_admin_console_access(pooler):
    """admin_users may run every command, stats_users only SHOW, other users may not log in to
    the admin console at all."""
    cols, _ = pooler.admin("SHOW POOLS", user="pgadmin")
    assert "cl_active" in cols
    cols, _ = pooler.admin("SHOW POOLS", user="pgstats")
    assert "cl_active" in cols
    with pytest.raises(psycopg.Error) as ei:
        pooler.admin("PAUSE", user="pgstats")
    assert "admin access needed" in str(ei.value) or harness.is_pgpilot()
    with pytest.raises(psycopg.OperationalError):
        pooler.admin("SHOW POOLS", user="md5user")
    with pytest.raises(psycopg.OperationalError):
        pooler.admin_conn(user="pgadmin", password="wrong")


@pytest.mark.pgpilot_only
def test_admin_alias_pgbouncer(pooler):
    """pgpilot's admin console also answers to the database name `pgbouncer` (exporters)."""
    cols, rows = pooler.admin("SHOW VERSION", dbname="pgbouncer")
    assert cols == ["version"] and rows


def test_admin_console_refuses_extended_protocol(pooler):
    """The admin console speaks the simple protocol only: a parameterised query (extended
    protocol) is refused with an error, the pooler stays up and a new console works."""
    with pooler.admin_conn() as c:
        with pytest.raises(psycopg.Error):
            c.execute("SHOW POOLS %s", ("x",))
    cols, rows = pooler.admin("SHOW VERSION")
    assert cols == ["version"] and len(rows) == 1
