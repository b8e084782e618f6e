"""Limits: max_client_conn, default_pool_size, max_db_connections, max_user_connections,
reserve pool, query_wait_timeout."""

import threading
import time

import psycopg
import pytest

import harness


def test_max_client_conn(pooler_factory):
    """With max_client_conn=3, a 4th client gets 'no more connections allowed
    (max_client_conn)' (53300 for pgpilot); the three connected ones keep working, and a slot
    freed is usable again."""
    p = pooler_factory(settings={"max_client_conn": "3"})
    conns = [p.connect() for _ in range(3)]
    with pytest.raises(harness.ServerError) as ei:
        harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    assert ei.value.sqlstate == harness.sqlstate("53300")
    assert ei.value.message == "no more connections allowed (max_client_conn)"
    for i, c in enumerate(conns):
        assert c.execute("SELECT %s::int", (i,)).fetchone()[0] == i
    conns.pop().close()

    def free_slot():
        try:
            with p.connect() as c:
                return c.execute("SELECT 1").fetchone()[0] == 1
        except psycopg.OperationalError:
            return False
    harness.wait_until(free_slot, 5, what="a freed client slot")
    for c in conns:
        c.close()


def run_parallel(fns):
    out = [None] * len(fns)

    def wrap(i, f):
        try:
            out[i] = f()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            out[i] = e
    ts = [threading.Thread(target=wrap, args=(i, f)) for i, f in enumerate(fns)]
    for t in ts:
        t.start()
    return ts, out


def test_default_pool_size_respected(pooler_factory, pg):
    """default_pool_size=2 and 6 clients running 1 s transactions at once: PostgreSQL never sees
    more than 2 backends for the pool, clients queue (cl_waiting) and all succeed."""
    p = pooler_factory(settings={"default_pool_size": "2"})
    conns = [p.connect() for _ in range(6)]

    def work(c):
        def f():
            with c.transaction():
                c.execute("SELECT pg_sleep(0.6)")
            return "ok"
        return f
    ts, out = run_parallel([work(c) for c in conns])
    peak_backends, peak_waiting = 0, 0
    while any(t.is_alive() for t in ts):
        peak_backends = max(peak_backends, len(pg.backends(user="md5user", dbname="appdb")))
        pool = p.pool()
        peak_waiting = max(peak_waiting, pool["cl_waiting"])
        assert pool["sv_active"] <= 2
        time.sleep(0.1)
    assert out == ["ok"] * 6
    assert peak_backends <= 2
    assert peak_waiting >= 1
    for c in conns:
        c.close()


def test_pool_size_per_database(pooler_factory, pg):
    """pool_size=1 on the database entry overrides default_pool_size."""
    p = pooler_factory(settings={"default_pool_size": "5"}, databases={
        "appdb": "host=127.0.0.1 port={pgport} dbname=appdb pool_size=1"})
    conns = [p.connect() for _ in range(3)]
    ts, out = run_parallel([lambda c=c: c.execute("SELECT pg_sleep(0.4), 1").fetchone()[1]
                            for c in conns])
    for t in ts:
        while t.is_alive():
            assert len(pg.backends(user="md5user", dbname="appdb")) <= 1
            t.join(0.05)
    assert out == [1, 1, 1]


def test_max_db_connections(pooler_factory, pg):
    """max_db_connections=2 caps the server connections of a database across users."""
    p = pooler_factory(settings={"default_pool_size": "5", "max_db_connections": "2"})
    conns = [p.connect(user=u) for u in ("md5user", "scramuser", "md5user", "scramuser")]
    ts, out = run_parallel([lambda c=c: c.execute("SELECT pg_sleep(0.5), 1").fetchone()[1]
                            for c in conns])
    peak = 0
    while any(t.is_alive() for t in ts):
        peak = max(peak, len(pg.backends(dbname="appdb")))
        time.sleep(0.05)
    assert out == [1] * 4
    assert peak <= 2


def test_max_user_connections(pooler_factory, pg):
    """max_user_connections=1 caps md5user's server connections across databases."""
    p = pooler_factory(settings={"default_pool_size": "5", "max_user_connections": "1"})
    conns = [p.connect(dbname=d) for d in ("appdb", "benchdb", "appdb")]
    ts, out = run_parallel([lambda c=c: c.execute("SELECT pg_sleep(0.4), 1").fetchone()[1]
                            for c in conns])
    peak = 0
    while any(t.is_alive() for t in ts):
        peak = max(peak, len(pg.backends(user="md5user")))
        time.sleep(0.05)
    assert out == [1] * 3
    assert peak <= 1


def test_reserve_pool(pooler_factory, pg):
    """default_pool_size=1, reserve_pool_size=1, reserve_pool_timeout=0.5: a client waiting longer
    than the timeout gets a second (reserve) server; never more than 2."""
    p = pooler_factory(settings={"default_pool_size": "1", "reserve_pool_size": "1",
                                 "reserve_pool_timeout": "0.5"})
    a, b = p.connect(), p.connect()
    a.execute("BEGIN")
    a.execute("SELECT 1")
    t0 = time.monotonic()
    assert b.execute("SELECT 2").fetchone()[0] == 2
    waited = time.monotonic() - t0
    assert 0.3 <= waited < 5
    assert len(pg.backends(user="md5user", dbname="appdb")) == 2
    a.execute("COMMIT")
    a.close()
    b.close()


def test_query_wait_timeout(pooler_factory):
    """pool_size 1 held by an open transaction: a second client's query fails after
    query_wait_timeout with 'query_wait_timeout' (08P01) and is closed; the holder is fine."""
    p = pooler_factory(settings={"default_pool_size": "1", "query_wait_timeout": "1"})
    holder = p.connect()
    holder.execute("BEGIN")
    holder.execute("SELECT 1")
    r = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    t0 = time.monotonic()
    with pytest.raises(harness.ServerError) as ei:
        r.query("SELECT 1")
    waited = time.monotonic() - t0
    assert ei.value.sqlstate == "08P01"
    assert "query_wait_timeout" in ei.value.message
    assert 0.8 <= waited < 4
    assert r.is_closed(3)
    assert holder.execute("SELECT 5").fetchone()[0] == 5
    holder.execute("COMMIT")
    holder.close()
