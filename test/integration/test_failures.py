"""Failures: a client vanishing mid-transaction, a server killed mid-transaction, PostgreSQL
down when the pooler starts."""

import time

import psycopg
import pytest

import harness


def test_client_vanishes_mid_transaction(pooler_factory, pg):
    """A client inside a transaction drops its socket (RST, no Terminate): its work is rolled
    back, and the next client on the single server is not in a transaction."""
    pg.create_table("vanish")
    p = pooler_factory(settings={"default_pool_size": "1"})
    r = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    r.query("BEGIN")
    r.query("INSERT INTO vanish VALUES (1, 'lost')")
    r.abort()
    with p.connect() as c:
        row = c.execute("SELECT count(*), now() = statement_timestamp() FROM vanish").fetchone()
        assert row == (0, True)
        assert c.info.transaction_status.name == "IDLE"
        c.execute("INSERT INTO vanish VALUES (2, 'kept')")
    assert pg.query("SELECT count(*) FROM vanish", dbname="appdb")[0][0] == 1


def test_client_vanishes_mid_query(pooler_factory, pg):
    """A client drops its socket while its query runs: the pooler does not hand that busy
    server to the next client mid-query (the next client's query returns its own result)."""
    p = pooler_factory(settings={"default_pool_size": "1"})
    r = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    r.send(harness.query_message("SELECT pg_sleep(1)"))
    time.sleep(0.2)
    r.abort()
    with p.connect() as c:
        assert c.execute("SELECT 'mine'").fetchone()[0] == "mine"
        assert c.info.transaction_status.name == "IDLE"


def kill_server_mid_transaction(p, pg):
    c = p.connect()
    c.execute("BEGIN")
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert pg.terminate(pid)
    harness.wait_until(lambda: pid not in [b[0] for b in pg.backends()], 5, what="backend gone")
    return c, pid


def test_server_killed_mid_transaction_error(pooler_factory, pg):
    """The server backend of a client in a transaction is terminated: the client's next query
    fails with an error, the pooler stays up, and a new client works."""
    p = pooler_factory()
    c, _ = kill_server_mid_transaction(p, pg)
    with pytest.raises(psycopg.Error):
        c.execute("SELECT 1")
    c.close()

    def new_client_ok():
        try:
            with p.connect() as d:
                return d.execute("SELECT 1").fetchone()[0] == 1
        except psycopg.Error:
            return False  # PgBouncer refuses for server_login_retry after a crash
    harness.wait_until(new_client_ok, 8, interval=0.5, what="a new client to work")
    assert p.running()


@pytest.mark.pgpilot_only
def test_server_killed_client_survives(pooler_factory, pg):
    """pgpilot: a client whose server dies mid-transaction gets SQLSTATE 08006, stays connected,
    and its next transaction works on a new server (PgBouncer closes the client instead)."""
    p = pooler_factory()
    c, pid = kill_server_mid_transaction(p, pg)
    with pytest.raises(psycopg.Error) as ei:
        c.execute("SELECT 1")
    assert ei.value.sqlstate == "08006"
    assert not c.closed
    if c.info.transaction_status.name == "INERROR":
        c.execute("ROLLBACK")  # the failed transaction is over either way
    with c.transaction():
        new = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert new != pid
    assert c.execute("SELECT 1").fetchone()[0] == 1


def test_postgres_down_at_start(pooler_factory, fresh_pg):
    """The pooler starts while PostgreSQL is down: it starts anyway, a client waits and then gets
    a clear error (the log says the connection failed); once PostgreSQL is up, the next client
    works."""
    port = harness.free_port()
    p = pooler_factory(pg_port=port, settings={"query_wait_timeout": "2",
                                                "server_connect_timeout": "1",
                                                "server_login_retry": "1"})
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as ei:
        with p.connect() as c:
            c.execute("SELECT 1")
    waited = time.monotonic() - t0
    assert 1 <= waited < 8
    assert str(ei.value).strip()
    p.wait_log(r"connect", timeout=2)
    assert p.running()
    db = fresh_pg(port=port)
    db.start()

    def works():
        try:
            with p.connect() as c:
                return c.execute("SELECT current_database()").fetchone()[0] == "appdb"
        except psycopg.OperationalError:
            return False
    harness.wait_until(works, 15, interval=0.5, what="client through the pooler")
