"""Tracked parameters in transaction mode: startup parameters and SETs of reported parameters
(DateStyle, TimeZone, application_name, ...) follow each client across a shared server."""

import pytest

import harness

SHOW = ("SELECT current_setting('DateStyle'), current_setting('TimeZone'), "
        "current_setting('application_name'), pg_backend_pid()")


def test_startup_parameters_follow_client(pooler_factory):
    """Clients A and B log in with different DateStyle / TimeZone / application_name in their
    startup packets; on one shared server (transaction mode, pool_size 1) each sees its own."""
    p = pooler_factory(settings={"default_pool_size": "1"})
    a = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass", DateStyle="SQL, DMY",
                                          TimeZone="Europe/Paris", application_name="alpha")
    b = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass", DateStyle="German",
                                          TimeZone="UTC", application_name="beta")
    pids = set()
    for _ in range(3):
        ra = a.query(SHOW)[0]
        rb = b.query(SHOW)[0]
        assert ra[:3] == ("SQL, DMY", "Europe/Paris", "alpha")
        assert rb[:3] == ("German, DMY", "UTC", "beta")
        assert a.query("SHOW DateStyle") == [("SQL, DMY",)]
        assert b.query("SHOW DateStyle") == [("German, DMY",)]
        pids.update((ra[3], rb[3]))
    assert len(pids) == 1, "both clients must have shared the single server"
    # the ParameterStatus each client got at login reflects its own values (PgBouncer echoes the
    # client's spelling, PostgreSQL would normalise "German" to "German, DMY": both fine)
    assert a.params.get("DateStyle") == "SQL, DMY"
    assert b.params.get("DateStyle", "").startswith("German")
    assert a.params.get("TimeZone") == "Europe/Paris"
    assert b.params.get("application_name") == "beta"
    a.close()
    b.close()


def test_set_parameter_follows_client(pooler_factory):
    """A SET of a reported parameter outside a transaction stays with the client that made it:
    the other client on the same server keeps its own value."""
    p = pooler_factory(settings={"default_pool_size": "1"})
    with p.connect(application_name="one") as a, p.connect(application_name="two") as b:
        a.execute("SET DateStyle = 'Postgres, YMD'")
        a.execute("SET TimeZone = 'Asia/Tokyo'")
        b.execute("SET TimeZone = 'America/New_York'")
        for _ in range(2):
            assert a.execute("SHOW DateStyle").fetchone()[0] == "Postgres, YMD"
            assert b.execute("SHOW DateStyle").fetchone()[0] == "ISO, MDY"
            assert a.execute("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo"
            assert b.execute("SHOW TimeZone").fetchone()[0] == "America/New_York"
            assert a.execute("SHOW application_name").fetchone()[0] == "one"
            assert b.execute("SHOW application_name").fetchone()[0] == "two"
        assert (a.execute("SELECT pg_backend_pid()").fetchone()
                == b.execute("SELECT pg_backend_pid()").fetchone())


@pytest.mark.pgpilot_only
def test_track_extra_parameters(pooler_factory, pg):
    """track_extra_parameters=search_path (PgBouncer >= 1.20, not the Debian 1.18): a client's
    search_path startup parameter follows it across the shared server."""
    with pg.connect_super(dbname="appdb") as c:
        c.execute("CREATE SCHEMA IF NOT EXISTS s1 AUTHORIZATION md5user")
    p = pooler_factory(settings={"default_pool_size": "1",
                                 "track_extra_parameters": "search_path"})
    a = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass", search_path="s1")
    b = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    for _ in range(2):
        assert a.query("SHOW search_path") == [("s1",)]
        assert b.query("SHOW search_path") == [('"$user", public',)]
    a.close()
    b.close()


def test_ignore_startup_parameters(pooler_factory):
    """An unknown startup parameter is refused unless listed in ignore_startup_parameters."""
    p = pooler_factory()
    try:
        harness.RawClient(p.port).startup("md5user", "appdb", "md5pass", extra_float_digits="2")
        refused = False
    except harness.ServerError as e:
        refused = True
        assert e.sqlstate == "08P01"
        assert "extra_float_digits" in e.message
    assert refused
    p2 = pooler_factory(settings={"ignore_startup_parameters": "extra_float_digits"})
    r = harness.RawClient(p2.port).startup("md5user", "appdb", "md5pass",
                                           extra_float_digits="2")
    assert r.query("SELECT 1") == [("1",)]
