"""Timeouts and server lifecycle: client_idle_timeout, idle_transaction_timeout, query_timeout,
server_idle_timeout, server_lifetime, min_pool_size, client_login_timeout."""

import time

import psycopg
import pytest

import harness


def test_client_idle_timeout(pooler_factory):
    """An idle client is closed after client_idle_timeout with an ErrorResponse naming it; an
    active client is not."""
    p = pooler_factory(settings={"client_idle_timeout": "1"})
    idle = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    idle.query("SELECT 1")
    busy = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3:
        busy.query("SELECT 1")
        time.sleep(0.2)
    idle.sock.settimeout(5)
    msgs = idle.read_until_eof()
    errs = [harness.parse_error_fields(b) for t, b in msgs if t == b"E"]
    assert errs and "client_idle_timeout" in errs[0]["M"]
    assert errs[0]["C"] == "08P01"
    assert busy.query("SELECT 2") == [("2",)]


def test_idle_transaction_timeout(pooler_factory, pg):
    """A client idle inside a transaction is closed after idle_transaction_timeout; its
    transaction is rolled back and the server is not handed to anyone mid-transaction."""
    pg.create_table("itt")
    p = pooler_factory(settings={"idle_transaction_timeout": "1", "default_pool_size": "1"})
    r = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    r.query("BEGIN")
    r.query("INSERT INTO itt VALUES (1, 'x')")
    r.sock.settimeout(6)
    msgs = r.read_until_eof()
    errs = [harness.parse_error_fields(b) for t, b in msgs if t == b"E"]
    assert errs and "idle transaction timeout" in errs[0]["M"].replace("_", " ")
    with p.connect() as c:
        assert c.execute("SELECT count(*), now() = statement_timestamp() FROM itt"
                         ).fetchone() == (0, True)


def test_query_timeout(pooler_factory):
    """query_timeout=1: a 5 s query is cut off with an error after about 1 s; the pooler
    stays up and other clients work."""
    p = pooler_factory(settings={"query_timeout": "1"})
    t0 = time.monotonic()
    with pytest.raises(psycopg.Error):
        with p.connect() as c:
            c.execute("SELECT pg_sleep(5)")
    assert time.monotonic() - t0 < 4
    with p.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_server_idle_timeout(pooler_factory, pg):
    """An unused server connection is closed after server_idle_timeout (gone from PostgreSQL and
    from SHOW SERVERS)."""
    p = pooler_factory(settings={"server_idle_timeout": "1"})
    with p.connect() as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        harness.wait_until(lambda: pid not in [b[0] for b in pg.backends()], 8,
                           what="idle server closed")
        assert not [s for s in p.admin_dicts("SHOW SERVERS") if s["database"] == "appdb"]
        # and the client just gets a new one
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] != pid


def test_server_lifetime(pooler_factory, pg):
    """A server older than server_lifetime is closed when released: the next transaction runs on
    a new backend and the old one is gone from PostgreSQL."""
    p = pooler_factory(settings={"server_lifetime": "1"})
    with p.connect() as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        time.sleep(1.6)
        harness.wait_until(lambda: c.execute("SELECT pg_backend_pid()").fetchone()[0] != pid, 8,
                           what="a new backend")
        harness.wait_until(lambda: pid not in [b[0] for b in pg.backends()], 8,
                           what="old backend closed")


def test_server_lifetime_not_mid_session(pooler_factory):
    """Session mode: server_lifetime never closes a server while its client is connected."""
    p = pooler_factory(settings={"server_lifetime": "1", "pool_mode": "session"})
    with p.connect() as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        time.sleep(2)
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid


def test_min_pool_size(pooler_factory, pg):
    """min_pool_size=3: once a client uses the pool, the pooler opens servers up to 3 and keeps
    them idle."""
    p = pooler_factory(settings={"min_pool_size": "3"})
    with p.connect() as c:
        c.execute("SELECT 1")
        harness.wait_until(lambda: len(pg.backends(user="md5user", dbname="appdb")) >= 3, 8,
                           what="3 server connections")

        def ready_servers():
            pool = p.pool()
            return pool["sv_idle"] + pool["sv_used"] + pool["sv_active"]
        harness.wait_until(lambda: ready_servers() >= 3, 5, what="3 servers in SHOW POOLS")
        assert len(pg.backends(user="md5user", dbname="appdb")) <= 10


def test_client_login_timeout(pooler_factory):
    """A client that connects and never finishes the startup is closed after
    client_login_timeout."""
    p = pooler_factory(settings={"client_login_timeout": "1"})
    r = harness.RawClient(p.port)
    t0 = time.monotonic()
    assert r.is_closed(8)
    assert time.monotonic() - t0 < 6
    with p.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
