"""Pool modes (session, transaction, statement), per-database / per-user pool_mode, server reset
and connect_query."""

import threading

import psycopg
import pytest

import harness


def backend_pid(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_session_mode_keeps_server(pooler_factory):
    """Session mode: one client keeps the same server backend across transactions, and a second
    client gets a different backend while the first is connected."""
    p = pooler_factory(settings={"pool_mode": "session"})
    with p.connect() as a, p.connect() as b:
        pids_a = {backend_pid(a) for _ in range(5)}
        a.execute("BEGIN")
        pids_a.add(backend_pid(a))
        a.execute("COMMIT")
        assert len(pids_a) == 1
        assert backend_pid(b) not in pids_a
        # session state survives between transactions
        a.execute("SET work_mem = '3MB'")
        assert a.execute("SHOW work_mem").fetchone()[0] == "3MB"


def test_transaction_mode_shares_one_server(pooler_factory, pg):
    """Transaction mode, pool_size=1: two clients alternate transactions on one server backend,
    and PostgreSQL sees only one backend for the pool."""
    p = pooler_factory(settings={"pool_mode": "transaction", "default_pool_size": "1"})
    with p.connect() as a, p.connect() as b:
        pids = set()
        for _ in range(3):
            pids.add(backend_pid(a))
            with b.transaction():
                pids.add(backend_pid(b))
                pids.add(backend_pid(b))
        assert len(pids) == 1
        assert len(pg.backends(user="md5user", dbname="appdb")) == 1
        pool = p.pool()
        assert pool["cl_active"] == 2 and pool["sv_active"] + pool["sv_idle"] == 1


def test_transaction_mode_waits_for_open_transaction(pooler_factory):
    """Transaction mode, pool_size=1: a client inside a transaction holds the server; another
    client's query waits (cl_waiting) and runs once the transaction ends."""
    p = pooler_factory(settings={"pool_mode": "transaction", "default_pool_size": "1"})
    with p.connect() as a, p.connect() as b:
        a.execute("BEGIN")
        a.execute("SELECT 1")
        done = threading.Event()
        result = []

        def run_b():
            result.append(b.execute("SELECT 42").fetchone()[0])
            done.set()

        t = threading.Thread(target=run_b)
        t.start()
        harness.wait_until(lambda: p.pool()["cl_waiting"] == 1, 5, what="b waiting")
        assert not done.is_set()
        a.execute("COMMIT")
        t.join(10)
        assert result == [42]


def test_statement_mode_refuses_transaction_block(pooler_factory):
    """Statement mode: BEGIN is refused with PgBouncer's message; single statements work, and
    another client is unaffected."""
    p = pooler_factory(settings={"pool_mode": "statement"})
    with p.connect() as ok:
        assert ok.execute("SELECT 1").fetchone()[0] == 1
        r = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
        assert r.query("SELECT 7") == [("7",)]
        with pytest.raises(harness.ServerError) as ei:
            r.query("BEGIN")
        assert "transaction blocks not allowed in statement pooling mode" in ei.value.message
        r.close()
        # a driver in non-autocommit mode sends BEGIN implicitly
        with p.connect(autocommit=False) as c:
            with pytest.raises(psycopg.Error) as ei2:
                c.execute("SELECT 1")
            assert "transaction blocks not allowed" in str(ei2.value)
        assert ok.execute("SELECT 2").fetchone()[0] == 2


def test_pool_mode_per_database(pooler_factory):
    """pool_mode= in a [databases] entry overrides the global mode (session db in a transaction
    pooler: the backend stays; SHOW DATABASES reports the mode)."""
    p = pooler_factory(settings={"pool_mode": "transaction", "default_pool_size": "2"},
                       databases={
                           "appdb": "host=127.0.0.1 port={pgport} dbname=appdb",
                           "sessdb": "host=127.0.0.1 port={pgport} dbname=appdb pool_mode=session",
                       })
    with p.connect(dbname="sessdb") as a, p.connect(dbname="sessdb") as b:
        pa, pb = backend_pid(a), backend_pid(b)
        assert pa != pb
        assert {backend_pid(a) for _ in range(3)} == {pa}
    dbs = {d["name"]: d for d in p.admin_dicts("SHOW DATABASES")}
    assert dbs["sessdb"]["pool_mode"] == "session"
    assert dbs["appdb"]["pool_mode"] in (None, "")


def test_pool_mode_per_user(pooler_factory):
    """[users] md5user = pool_mode=session: md5user's clients keep their backend while another
    user in the same database is pooled per transaction."""
    p = pooler_factory(settings={"pool_mode": "transaction", "default_pool_size": "2"},
                       users={"md5user": "pool_mode=session"})
    with p.connect(user="md5user") as a, p.connect(user="md5user") as b:
        assert backend_pid(a) != backend_pid(b)  # session: each client its own server
        with p.connect(user="scramuser") as c:
            c.execute("SELECT 1")
            pools = {(x["database"], x["user"]): x for x in p.admin_dicts("SHOW POOLS")}
            assert pools[("appdb", "md5user")]["pool_mode"] == "session"
            assert pools[("appdb", "scramuser")]["pool_mode"] == "transaction"
            # session clients hold their servers even when idle
            assert pools[("appdb", "md5user")]["sv_active"] == 2
    users = {u["name"]: u for u in p.admin_dicts("SHOW USERS")}
    assert users["md5user"]["pool_mode"] == "session"


@pytest.mark.parametrize("reset", ["DISCARD ALL", ""])
def test_server_reset_query(pooler_factory, reset):
    """Session mode, pool_size 1: a setting made by client A is wiped by server_reset_query
    before client B gets the same backend; with an empty reset query it leaks through."""
    p = pooler_factory(settings={"pool_mode": "session", "default_pool_size": "1",
                                 "server_reset_query": reset})
    with p.connect() as a:
        pid = backend_pid(a)
        default = a.execute("SHOW work_mem").fetchone()[0]
        a.execute("SET work_mem = '7MB'")
    with p.connect() as b:
        harness.wait_until(lambda: backend_pid(b) == pid, 5, what="same backend")
        expect = default if reset else "7MB"
        assert b.execute("SHOW work_mem").fetchone()[0] == expect


def test_connect_query(pooler_factory):
    """connect_query in a [databases] entry runs on each new server connection."""
    p = pooler_factory(databases={
        "appdb": "host=127.0.0.1 port={pgport} dbname=appdb "
                 "connect_query='SET work_mem TO 12345'"})
    with p.connect() as c:
        assert c.execute("SHOW work_mem").fetchone()[0] == "12345kB"


def test_forced_user_in_database_entry(pooler_factory):
    """user=/password= in a [databases] entry: every client runs as that server user."""
    p = pooler_factory(databases={
        "asscram": "host=127.0.0.1 port={pgport} dbname=appdb user=scramuser password=scrampass"})
    with p.connect(dbname="asscram", user="md5user") as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "scramuser"
    dbs = {d["name"]: d for d in p.admin_dicts("SHOW DATABASES")}
    assert dbs["asscram"]["force_user"] == "scramuser"
