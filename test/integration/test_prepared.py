"""Protocol-level named prepared statements in transaction pooling (max_prepared_statements):
renamed per server, prepared again on a server that lacks them, shared between clients that
prepare the same thing, Close and DEALLOCATE ALL, eviction, servers dying under them, pgbench -M
prepared."""

import struct
import threading
import time

import psycopg
import pytest

import harness

pytestmark = pytest.mark.skipif(not harness.is_pgpilot(), reason="pgpilot option")


# -- raw extended-protocol messages


def msg(tag, body=b""):
    return tag + struct.pack("!i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def parse(name, query, types=()):
    return msg(b"P", cstr(name) + cstr(query) + struct.pack("!h", len(types)) +
               b"".join(struct.pack("!i", t) for t in types))


def bind(stmt, params=(), portal=""):
    body = cstr(portal) + cstr(stmt) + struct.pack("!h", 0) + struct.pack("!h", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p.encode()
    return msg(b"B", body + struct.pack("!h", 0))


def describe(kind, name):
    return msg(b"D", kind + cstr(name))


def close(kind, name):
    return msg(b"C", kind + cstr(name))


def execute(portal=""):
    return msg(b"E", cstr(portal) + struct.pack("!i", 0))


SYNC = msg(b"S")
FLUSH = msg(b"H")


def replies(r, until_z=1):
    """Message tags (and DataRow values, SQLSTATEs) read until <until_z> ReadyForQuery."""
    out = []
    while until_z:
        m = r.read_message()
        assert m is not None, f"connection closed after {out}"
        tag, body = m
        if tag == b"D":
            (ln,) = struct.unpack("!i", body[2:6])
            out.append("D:" + body[6:6 + ln].decode())
        elif tag == b"E":
            out.append("E:" + harness.parse_error_fields(body).get("C", "?"))
        elif tag in (b"N", b"S"):
            continue
        else:
            out.append(tag.decode())
        if tag == b"Z":
            until_z -= 1
    return out


def raw(p):
    return harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")


def one_pool(pooler_factory, **settings):
    base = {"pool_mode": "transaction", "default_pool_size": "1"}
    base.update(settings)
    return pooler_factory(settings=base)


def prepared_names(conn):
    """Names of the prepared statements of the backend this (unprepared) query runs on."""
    rows = conn.execute("SELECT name FROM pg_prepared_statements ORDER BY name",
                        prepare=False).fetchall()
    return [r[0] for r in rows]


# -- tests


@pytest.mark.parametrize("threshold", [0, None, 2], ids=["threshold0", "off", "threshold2"])
def test_psycopg_two_clients_one_server(pooler_factory, threshold):
    """pool_size 1, two psycopg clients interleaving: both name their first statement _pg3_0
    for different queries; each gets its own results, on one backend, whose statements carry
    pooler names only."""
    p = one_pool(pooler_factory)
    with p.connect(prepare_threshold=threshold) as a, p.connect(prepare_threshold=threshold) as b:
        pids = set()
        for i in range(8):
            assert a.execute("SELECT %s::int + 1", (i,)).fetchone()[0] == i + 1
            assert b.execute("SELECT %s::text || '-b'", (str(i),)).fetchone()[0] == f"{i}-b"
            with a.transaction():
                assert a.execute("SELECT %s::int * 10", (i,)).fetchone()[0] == i * 10
                pids.add(a.execute("SELECT pg_backend_pid()", prepare=False).fetchone()[0])
            assert b.execute("SELECT %s::int + 1", (i,)).fetchone()[0] == i + 1
        assert len(pids) == 1
        names = prepared_names(a)
        if threshold is None:
            assert names == []
        else:
            assert names and all(n.startswith("PGPILOT_") for n in names), names
            # "SELECT $1::int + 1" was prepared by both clients: one server statement
            assert len(names) == 3, names


def test_pipeline_synthesized_replies_in_order(pooler_factory):
    """Raw protocol, one server: a Parse of a statement the server already holds and a Close
    are answered by the pooler in their place in the reply stream; after an error the server
    skips to Sync and so do the pooler's answers."""
    p = one_pool(pooler_factory)
    a, b = raw(p), raw(p)
    a.send(parse("a1", "SELECT $1::int + 100", (23,)) + SYNC)
    assert replies(a) == ["1", "Z"]
    # b prepares the same query under another name: the server has it already
    b.send(parse("b1", "SELECT $1::int + 100", (23,)) + bind("b1", ["1"]) + execute() +
           close(b"S", "b1") + bind("b1", ["2"]) + SYNC)
    assert replies(b) == ["1", "2", "D:101", "C", "3", "E:26000", "Z"]
    # a's statement is untouched by b's Close
    a.send(bind("a1", ["5"]) + execute() + SYNC)
    assert replies(a) == ["2", "D:105", "C", "Z"]
    # an error skips the rest up to Sync, the pooler's CloseComplete included (the name is
    # forgotten all the same: a documented difference from PostgreSQL)
    b.send(parse("b2", "SELECT 1/($1::int + (random() * 0)::int)", (23,)) +
           bind("b2", ["0"]) + execute() + close(b"S", "b2") + SYNC +
           parse("b4", "SELECT 1/$1::int", (23,)) + bind("b4", ["1"]) + execute() + SYNC)
    assert replies(b, 2) == ["1", "2", "E:22012", "Z", "1", "2", "D:1", "C", "Z"]
    # Describe of a statement, Flush without Sync: answers come without waiting for a Sync
    b.send(parse("b3", "SELECT $1::int AS x", (23,)) + describe(b"S", "b3") + FLUSH)
    got = [b.read_message()[0] for _ in range(3)]
    assert got == [b"1", b"t", b"T"]
    b.send(SYNC)
    assert replies(b) == ["Z"]
    # a Parse of a statement the server holds, then only a Flush: the answer still comes
    a.send(parse("a2", "SELECT $1::int AS x", (23,)) + FLUSH)
    assert a.read_message()[0] == b"1"
    a.send(SYNC)
    assert replies(a) == ["Z"]
    a.close()
    b.close()


def test_statement_moves_between_servers(pooler_factory, pg):
    """pool_size 2: a statement prepared on one server is prepared again (Parse injected, its
    ParseComplete swallowed) when the client's next transaction runs on the other one."""
    p = one_pool(pooler_factory, default_pool_size="2")
    a, hog = raw(p), raw(p)
    a.send(parse("s", "SELECT $1::int * 2, pg_backend_pid()", (23,)) + SYNC)
    assert replies(a) == ["1", "Z"]
    a.send(bind("s", ["1"]) + execute() + SYNC)
    out = replies(a)
    assert out[:2] == ["2", "D:2"]
    # hold a's server in a transaction from another client so a gets the second server
    pids = set()
    hog.query("BEGIN")
    pids.add(hog.query("SELECT pg_backend_pid()")[0][0])
    a.send(bind("s", ["21"]) + describe(b"P", "") + execute() + SYNC)
    assert replies(a) == ["2", "T", "D:42", "C", "Z"]
    a.send(describe(b"S", "s") + SYNC)
    assert replies(a) == ["t", "T", "Z"]
    hog.query("COMMIT")
    assert len(pg.backends(user="md5user", dbname="appdb")) == 2
    a.close()
    hog.close()


def test_close_and_deallocate_all(pooler_factory):
    """Close('S') answers CloseComplete, after which the name is unknown to the client and can
    be reused for another query; DEALLOCATE ALL and DISCARD ALL drop the client's statements
    (its next Bind fails as on PostgreSQL) and the server's, without breaking another client."""
    p = one_pool(pooler_factory)
    a, b = raw(p), raw(p)
    a.send(parse("x", "SELECT 1") + SYNC)
    assert replies(a) == ["1", "Z"]
    a.send(close(b"S", "x") + SYNC)
    assert replies(a) == ["3", "Z"]
    a.send(bind("x") + execute() + SYNC)
    assert replies(a) == ["E:26000", "Z"]
    a.send(parse("x", "SELECT 2") + bind("x") + execute() + SYNC)
    assert replies(a) == ["1", "2", "D:2", "C", "Z"]
    # Close of a name never prepared is passed to the server, which answers CloseComplete too
    a.send(close(b"S", "never") + SYNC)
    assert replies(a) == ["3", "Z"]
    b.send(parse("y", "SELECT 3") + SYNC)
    assert replies(b) == ["1", "Z"]
    for cmd in ("DEALLOCATE ALL", "DISCARD ALL"):
        a.query(cmd)
        a.send(bind("x") + execute() + SYNC)
        assert replies(a) == ["E:26000", "Z"]
        # b's statement went from the server too: the pooler prepares it again
        b.send(bind("y") + execute() + SYNC)
        assert replies(b) == ["2", "D:3", "C", "Z"]
        a.send(parse("x", "SELECT 2") + SYNC)
        assert replies(a) == ["1", "Z"]
    a.close()
    b.close()


def test_eviction_above_max_prepared_statements(pooler_factory):
    """max_prepared_statements=3: a client prepares 6 statements; at the next link the server
    keeps at most 3 (least recently used closed), and the evicted ones still work (prepared
    again)."""
    p = one_pool(pooler_factory, max_prepared_statements="3")
    with p.connect(prepare_threshold=0) as c, p.connect(prepare_threshold=None) as plain:
        for i in range(6):
            assert c.execute(f"SELECT {i} + %s::int", (1,)).fetchone()[0] == i + 1
        names = prepared_names(plain)
        assert len(names) <= 3, names
        for i in range(6):
            assert c.execute(f"SELECT {i} + %s::int", (2,)).fetchone()[0] == i + 2
        assert len(prepared_names(plain)) <= 3


def test_max_prepared_statements_zero_passes_names(pooler_factory):
    """max_prepared_statements=0 (and session mode): the client's names reach the server."""
    p = one_pool(pooler_factory, max_prepared_statements="0")
    with p.connect(prepare_threshold=0) as c:
        with c.transaction():
            c.execute("SELECT %s::int", (1,))
            assert "_pg3_0" in prepared_names(c)
    p2 = one_pool(pooler_factory, pool_mode="session")
    with p2.connect(prepare_threshold=0) as c:
        c.execute("SELECT %s::int", (1,))
        assert "_pg3_0" in prepared_names(c)


def test_server_killed_under_prepared_client(pooler_factory, pg):
    """A client with prepared statements loses its server inside a transaction: one 08006
    error, then its next transaction prepares again on a new server and works; an idle
    client's killed server is replaced without an error."""
    p = one_pool(pooler_factory, default_pool_size="2")
    with p.connect(prepare_threshold=0) as c:
        assert c.execute("SELECT %s::int + 1", (1,)).fetchone()[0] == 2
        c.execute("BEGIN")
        assert c.execute("SELECT %s::int + 1", (2,)).fetchone()[0] == 3
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pg.terminate(pid)
        with pytest.raises(psycopg.OperationalError) as ei:
            c.execute("SELECT %s::int + 1", (3,))
        assert ei.value.sqlstate == "08006"
        assert c.info.transaction_status.name == "IDLE"
        assert c.execute("SELECT %s::int + 1", (4,)).fetchone()[0] == 5
        # idle: every server killed; the next statement just works
        for b in pg.backends(user="md5user"):
            pg.terminate(b[0])
        harness.wait_until(lambda: not pg.backends(user="md5user"), 5, what="backends gone")
        assert c.execute("SELECT %s::int + 1", (5,)).fetchone()[0] == 6


def test_servers_killed_under_load_no_stall(pooler_factory, pg):
    """Two psycopg writers (prepare_threshold=0, pool_size 2) while every server backend is
    terminated again and again: the only errors are 08006, no writer raises anything but a
    psycopg error (a confused reply stream does) and none stalls (the failover hang)."""
    pg.create_table("pskill", "seq int, who text")
    p = one_pool(pooler_factory, default_pool_size="2")
    stop = threading.Event()
    state = {}

    def writer(who):
        st = state[who] = {"ok": 0, "errors": [], "crash": None, "last": time.monotonic()}
        try:
            with p.connect(prepare_threshold=0) as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        row = c.execute("INSERT INTO pskill VALUES (%s, %s) RETURNING seq",
                                        (i, who)).fetchone()
                        assert row[0] == i
                        st["ok"] += 1
                    except psycopg.Error as e:
                        st["errors"].append(e.sqlstate)
                    st["last"] = time.monotonic()
        except BaseException as e:  # noqa: B902 - a crash is what we look for
            st["crash"] = repr(e)

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in ("a", "b")]
    for t in threads:
        t.start()
    try:
        harness.wait_until(lambda: all(state.get(w, {}).get("ok", 0) > 5 for w in "ab"), 10,
                           what="writers running")
        for k in range(25):
            time.sleep(0.05 + 0.01 * (k % 7))
            for b in pg.backends(user="md5user"):
                pg.terminate(b[0])
            for w in "ab":
                assert state[w]["crash"] is None, state[w]["crash"]
                assert time.monotonic() - state[w]["last"] < 5, f"writer {w} stalled: {state}"
        before = {w: state[w]["ok"] for w in "ab"}
        time.sleep(1)
        assert all(state[w]["ok"] > before[w] for w in "ab"), state
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    for w in "ab":
        assert state[w]["crash"] is None, state[w]["crash"]
        assert set(state[w]["errors"]) <= {"08006"}, state[w]["errors"]
        assert not threads[0].is_alive() and not threads[1].is_alive()


def test_pgbench_prepared(pooler_factory):
    """pgbench -M prepared -c 10 -j 2 -T 5 through a transaction pooler (clients move between
    servers, which share their statements): exit 0, no failed transaction, work done. The pool
    has a server per client: pgbench prepares with blocking calls on the first command of each
    client, which would wait forever behind another client of its own thread holding the only
    free server in a transaction."""
    p = pooler_factory(settings={"default_pool_size": "10", "max_client_conn": "100"})
    rc, out = harness.pgbench(p.port, "-c", "10", "-j", "2", "-T", "5", "-M", "prepared",
                              "--no-vacuum")
    assert rc == 0, out
    assert harness.pgbench_failed(out) == 0, out
    assert harness.pgbench_processed(out) > 100, out
