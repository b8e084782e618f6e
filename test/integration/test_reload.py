"""Configuration: RELOAD / SIGHUP with good and bad files, %include, the section name."""

import os
import signal
import time

import psycopg
import pytest

import harness


def config(p):
    return {r[0]: r[1] for r in p.admin("SHOW CONFIG")[1]}


def pool_sizes(p):
    return {d["name"]: d["pool_size"] for d in p.admin_dicts("SHOW DATABASES")}


@pytest.mark.parametrize("via", ["admin", "hup"])
def test_reload_good_file(pooler_factory, via):
    """A changed default_pool_size, a per-database pool_size and a new database take effect after
    RELOAD (or SIGHUP); a connected client keeps working."""
    p = pooler_factory()
    with p.connect() as c:
        c.execute("SELECT 1")
        assert pool_sizes(p)["appdb"] == 10
        dbs = dict(p.databases)
        dbs["benchdb"] = "host=127.0.0.1 port={pgport} dbname=benchdb pool_size=3"
        dbs["newdb"] = "host=127.0.0.1 port={pgport} dbname=appdb"
        p.reload(p.render(settings={"default_pool_size": "4"}, databases=dbs), via=via)
        harness.wait_until(lambda: pool_sizes(p).get("appdb") == 4, 5, what="reload applied")
        sizes = pool_sizes(p)
        assert sizes["benchdb"] == 3 and sizes["newdb"] == 4
        assert config(p)["default_pool_size"] == "4"
        assert c.execute("SELECT 2").fetchone()[0] == 2
        with p.connect(dbname="newdb") as n:
            assert n.execute("SELECT current_database()").fetchone()[0] == "appdb"


def test_reload_removes_database(pooler_factory):
    """A database removed from the file is gone after RELOAD: new clients get 'no such
    database'."""
    p = pooler_factory()
    p.reload(p.render(databases={"appdb": p.databases["appdb"]}))
    harness.wait_until(lambda: "benchdb" not in pool_sizes(p), 5, what="benchdb removed")
    with pytest.raises(harness.ServerError) as ei:
        harness.RawClient(p.port).startup("md5user", "benchdb", "md5pass")
    assert "no such database" in ei.value.message


BAD_FILES = {
    # name: (how to break the file, regex the log must match to say why)
    "bad_value": (lambda p: p.render(settings={"pool_mode": "bogus", "default_pool_size": "3"}),
                  r"bogus|pool_mode"),
    "syntax": (lambda p: "[unterminated\nthis is not = an ini [file\n" + p.render(
        settings={"default_pool_size": "3"}), r"syntax|line|:1\b|unterminated"),
    "bad_number": (lambda p: p.render(settings={"default_pool_size": "many"}),
                   r"many|default_pool_size"),
}


@pytest.mark.parametrize("how", list(BAD_FILES))
@pytest.mark.parametrize("via", ["admin", "hup"])
def test_reload_bad_file(pooler_factory, how, via):
    """RELOAD / SIGHUP with a broken file: the pooler keeps running, logs why, and connected and
    new clients keep working. (That the old settings stay in force is checked for pgpilot
    only: PgBouncer 1.18 half-applies a bad file.)"""
    p = pooler_factory()
    make_bad, why = BAD_FILES[how]
    with p.connect() as c:
        c.execute("SELECT 1")
        log_at = len(p.log)
        try:
            p.reload(make_bad(p), via=via)
        except psycopg.Error:
            pass  # reporting the failure to the console is fine too
        p.wait_log(why, timeout=5, since=log_at)
        time.sleep(0.2)
        assert p.running()
        assert c.execute("SELECT 2").fetchone()[0] == 2
        with p.connect() as d:
            assert d.execute("SELECT 3").fetchone()[0] == 3
        if harness.is_pgpilot():
            cfg = config(p)
            assert cfg["pool_mode"] == "transaction"
            assert cfg["default_pool_size"] == "10"
    # a good file afterwards is applied
    p.reload(p.render(settings={"default_pool_size": "6"}))
    harness.wait_until(lambda: pool_sizes(p).get("appdb") == 6, 5, what="good reload")


def test_reload_bad_auth_file(pooler_factory):
    """RELOAD naming an auth_file that does not exist: logged, pooler keeps running and the
    known users still log in."""
    p = pooler_factory()
    log_at = len(p.log)
    try:
        p.reload(p.render(settings={"auth_file": os.path.join(p.dir, "missing.txt")}))
    except psycopg.Error:
        pass
    p.wait_log(r"missing\.txt", timeout=5, since=log_at)
    assert p.running()
    with p.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_userlist_change_on_reload(pooler_factory):
    """A password changed in auth_file is used after RELOAD: old one refused, new one works
    (server login uses the database entry's password)."""
    p = pooler_factory(databases={
        "appdb": "host=127.0.0.1 port={pgport} dbname=appdb user=md5user password=md5pass"})
    ul = dict(p.userlist, md5user="changed-pass")
    p.write_userlist(ul)
    p.admin("RELOAD")
    with pytest.raises(harness.ServerError):
        harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    r = harness.RawClient(p.port).startup("md5user", "appdb", "changed-pass")
    assert r.query("SELECT current_user") == [("md5user",)]


def test_include_directive(pooler_factory):
    """%include pulls the [databases] section from another file."""
    p = pooler_factory(start=False, databases={})
    inc = p.write_file("dbs.ini", "[databases]\nincdb = host=127.0.0.1 port=%d dbname=appdb\n"
                       % p.pg_port)
    p.extra = f"%include {inc}\n"
    p.write_ini()
    p.start()
    with p.connect(dbname="incdb") as c:
        assert c.execute("SELECT current_database()").fetchone()[0] == "appdb"


@pytest.mark.parametrize("section", ["pgbouncer", "pgpilot"])
def test_section_name(pooler_factory, section):
    """The main section may be called [pgbouncer] (both poolers) or [pgpilot] (pgpilot only)."""
    if section == "pgpilot" and not harness.is_pgpilot():
        pytest.skip("PgBouncer knows only [pgbouncer]")
    p = pooler_factory(section=section, settings={"default_pool_size": "3"})
    with p.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    assert config(p)["default_pool_size"] == "3"


def test_bad_config_at_start(pooler_factory):
    """A broken file at start: the process exits non-zero and says why; nothing listens."""
    p = pooler_factory(start=False, settings={"pool_mode": "bogus"})
    p.start(wait=False)
    rc = p.wait_exit(10)
    assert rc != 0
    assert "bogus" in p.log or "pool_mode" in p.log
    assert not harness.port_accepts(p.port)


def test_sighup_reload_logged(pooler_factory):
    """SIGHUP re-reads the file (a changed setting shows in SHOW CONFIG)."""
    p = pooler_factory()
    p.write_ini(p.render(settings={"query_wait_timeout": "17"}))
    p.signal(signal.SIGHUP)
    harness.wait_until(lambda: config(p)["query_wait_timeout"] == "17", 5, what="SIGHUP reload")
