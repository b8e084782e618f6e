"""Hostile clients on the data path (issue 8): each finding as one scenario against a real
PostgreSQL, with memory bounds on the pooler while a client floods it.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

Bounds (documented here and in README): while one client floods for up to FLOOD_SECONDS, the
pooler's resident set (VmRSS) grows by less than RSS_BOUND_KIB; a client the pooler cannot accept
for lack of file descriptors costs it less than half a core and a bounded number of log lines.
Every test also checks that a bystander client, connected before the attack, still gets its
answers and that a new client can log in afterwards.
"""

import errno
import os
import select
import signal
import socket
import struct
import threading
import time

import psycopg
import pytest

import harness

# The flood bound: 64 MiB of growth; twice that for an ASan build (PGPILOT_SANITIZED, set by
# `make check-integration-asan`), whose redzones, shadow and quarantine count in its RSS.
RSS_BOUND_KIB = 64 * 1024 * (2 if os.environ.get("PGPILOT_SANITIZED") else 1)
FLOOD_SECONDS = 10

SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST = struct.pack("!II", 8, 80877104)


# -- helpers


def msg(tag, body=b""):
    return tag + struct.pack("!i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def raw_login(p, user="md5user", db="appdb", **params):
    return harness.RawClient(p.port).startup(user, db, harness.PASSWORDS[user], **params)


class Bystander:
    """A psycopg client connected before the attack; check() runs a query on it and on a new
    connection (both must answer)."""

    def __init__(self, p):
        self.p = p
        self.conn = p.connect()
        assert self.conn.execute("SELECT 1").fetchone()[0] == 1

    def check(self, n=2):
        assert self.p.running(), "the pooler died"
        assert self.conn.execute("SELECT %s::int", (n,)).fetchone()[0] == n, "bystander broken"
        with self.p.connect(connect_timeout=10) as d:
            assert d.execute("SELECT %s::int + 1", (n,)).fetchone()[0] == n + 1

    def close(self):
        self.conn.close()


@pytest.fixture
def bystander():
    made = []

    def make(p):
        b = Bystander(p)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def flood(sock, chunk, seconds, pid, stop_growth_kib=None):
    """Send chunk over and over on a non-blocking socket without reading, for up to seconds.
    Returns (bytes sent, closed by peer?, largest RSS growth seen in KiB). Stops early when the
    peer closes or (stop_growth_kib) when the pooler's RSS grew by more than that."""
    sock.setblocking(False)
    base = harness.rss_kib(pid)
    peak = 0
    sent = 0
    closed = False
    deadline = time.monotonic() + seconds
    last_rss = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now - last_rss > 0.1:
            last_rss = now
            if not harness.pid_alive(pid):
                break
            peak = max(peak, harness.rss_kib(pid) - base)
            if stop_growth_kib and peak > stop_growth_kib:
                break
        try:
            _, w, _ = select.select([], [sock], [], 0.1)
            if not w:
                continue
            off = sent % len(chunk)
            sent += sock.send(chunk[off:] + chunk[:off])
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                continue
            closed = True
            break
    if harness.pid_alive(pid):
        peak = max(peak, harness.rss_kib(pid) - base)
    return sent, closed, peak


# -- finding 1: SSLRequest / GSSENCRequest flood


@pytest.mark.pgpilot_only
@pytest.mark.parametrize("req", [SSL_REQUEST, GSSENC_REQUEST], ids=["ssl", "gssenc"])
def test_second_encryption_request_refused(pooler_factory, bystander, req):
    """PostgreSQL answers one SSLRequest and one GSSENCRequest per connection: the same request
    a second time gets an ErrorResponse or a close, never a second 'N' (PgBouncer 1.18 answers
    'N' again)."""
    p = pooler_factory()
    b = bystander(p)
    r = harness.RawClient(p.port)
    r.send(req)
    assert r.read_byte() == b"N"
    r.send(req)
    r.sock.settimeout(5)
    nxt = r.read_byte()
    assert nxt in (None, b"E"), f"second request answered {nxt!r}"
    r.close()
    b.check()


@pytest.mark.pgpilot_only
@pytest.mark.parametrize("req", [SSL_REQUEST, GSSENC_REQUEST], ids=["ssl", "gssenc"])
def test_encryption_request_flood(pooler_factory, bystander, req):
    """SSLRequests (GSSENCRequests) back to back on one connection, answers never read, for up to
    FLOOD_SECONDS: the pooler closes that connection, stays alive, its RSS grows by less than
    RSS_BOUND_KIB, and the bystander works during and after the flood."""
    p = pooler_factory()
    b = bystander(p)
    s = socket.create_connection(("127.0.0.1", p.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    during = []

    def probe():
        time.sleep(2)
        try:
            with p.connect(connect_timeout=10) as d:
                during.append(d.execute("SELECT 7").fetchone()[0])
        except psycopg.Error as e:
            during.append(repr(e))

    t = threading.Thread(target=probe)
    t.start()
    sent, closed, growth = flood(s, req * 8192, FLOOD_SECONDS, p.proc.pid,
                                 stop_growth_kib=4 * RSS_BOUND_KIB)
    t.join(30)
    s.close()
    assert p.running(), "the pooler died during the flood"
    assert growth < RSS_BOUND_KIB, f"RSS grew by {growth} KiB after {sent} bytes of requests"
    assert closed, f"flooding connection still open after {sent} bytes"
    assert during == [7], f"a client during the flood got {during}"
    b.check()


# -- finding 2: output the pooler generates itself, never read


@pytest.mark.pgpilot_only
def test_admin_show_config_pipelined_unread(pooler_factory, bystander):
    """A stats user pipelines SHOW CONFIG and never reads the replies: the pooler stops reading
    from it (or closes it) instead of queueing without limit: RSS grows by less than
    RSS_BOUND_KIB, the pooler and the bystander are fine."""
    p = pooler_factory()
    b = bystander(p)
    r = harness.RawClient(p.port).startup("pgstats", p.admin_db, "statspass")
    r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent, closed, growth = flood(r.sock, harness.query_message("SHOW CONFIG;") * 256,
                                 FLOOD_SECONDS, p.proc.pid, stop_growth_kib=4 * RSS_BOUND_KIB)
    r.close()
    assert p.running()
    assert growth < RSS_BOUND_KIB, f"RSS grew by {growth} KiB after {sent} bytes of SHOW CONFIG"
    b.check()


@pytest.mark.pgpilot_only
def test_named_bind_pipelined_unread(pooler_factory, bystander):
    """Transaction pooling with max_prepared_statements: a client pipelines Bind/Execute of a
    named statement (each Bind rewritten by the pooler for the server) and never reads: the
    server's replies back up, and the rewritten Binds must not pile up in the pooler without
    limit: RSS grows by less than RSS_BOUND_KIB, the pooler and the bystander are fine."""
    p = pooler_factory(settings={"max_prepared_statements": "100", "default_pool_size": "2"})
    b = bystander(p)
    r = raw_login(p)
    q = "SELECT $1::text"
    r.send(msg(b"P", cstr("s1") + cstr(q) + struct.pack("!hi", 1, 25)) + msg(b"S"))
    while r.read_message()[0] != b"Z":
        pass
    val = b"v" * 100
    bind = msg(b"B", cstr("") + cstr("s1") + struct.pack("!hh", 0, 1) +
               struct.pack("!i", len(val)) + val + struct.pack("!h", 0))
    execute = msg(b"E", cstr("") + struct.pack("!i", 0))
    r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent, closed, growth = flood(r.sock, (bind + execute) * 64, FLOOD_SECONDS, p.proc.pid,
                                 stop_growth_kib=4 * RSS_BOUND_KIB)
    r.abort()
    assert p.running()
    assert growth < RSS_BOUND_KIB, f"RSS grew by {growth} KiB after {sent} bytes of Bind/Execute"
    b.check()


# -- finding 3: a client socket never read again (the wedge)


def run_with_timeout(fn, timeout):
    """fn() in a thread; its result, or AssertionError if it does not finish within timeout."""
    out = []

    def body():
        try:
            out.append(("ok", fn()))
        except Exception as e:  # reported to the test below
            out.append(("error", e))

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout)
    assert out, f"no answer within {timeout}s (the client is wedged)"
    kind, val = out[0]
    if kind == "error":
        raise val
    return val


WEDGE_CASES = {
    # name: (query, parameter)
    "query_5000": ("SELECT %s::int + 1 /* " + "q" * 5000 + " */", 41),
    "bind_50k": ("SELECT length(%s::text)", "b" * 50_000),
    "bind_300k": ("SELECT length(%s::text)", "b" * 300_000),
}


def wedge_expect(param):
    return 42 if param == 41 else len(param)


@pytest.mark.pgpilot_only
@pytest.mark.parametrize("case", list(WEDGE_CASES))
def test_prepared_large_message_on_fresh_pooler(pooler_factory, case):
    """psycopg execute(prepare=True) of a 5,000-byte query (a 50 kB, 300 kB Bind) as the first
    query of a fresh pooler (the client waits for a server to log in): the right answer comes
    back, twice, and SIGINT shutdown then completes."""
    p = pooler_factory(settings={"max_prepared_statements": "100", "default_pool_size": "5"})
    q, param = WEDGE_CASES[case]
    conn = p.connect()
    try:
        for _ in range(2):
            got = run_with_timeout(
                lambda: conn.execute(q, (param,), prepare=True).fetchone()[0], 20)
            assert got == wedge_expect(param)
    finally:
        conn.close()
    p.signal(signal.SIGINT)
    p.wait_exit(15)


@pytest.mark.pgpilot_only
@pytest.mark.parametrize("size", [5_000, 300_000], ids=["bind_5k", "bind_300k"])
def test_large_bind_while_waiting_for_server(pooler_factory, size):
    """Pool of one server held by another client's transaction: a psycopg client sends a Bind of
    its prepared statement with a large parameter and waits for the server; once the holder
    commits, the Bind goes through and the right answer comes back."""
    p = pooler_factory(settings={"max_prepared_statements": "100", "default_pool_size": "1"})
    q = "SELECT length(%s::text)"
    with p.connect() as victim, p.connect() as holder:
        assert victim.execute(q, ("x",), prepare=True).fetchone()[0] == 1
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        out = []
        t = threading.Thread(target=lambda: out.append(
            victim.execute(q, ("b" * size,), prepare=True).fetchone()[0]), daemon=True)
        t.start()
        time.sleep(1)
        holder.execute("COMMIT")
        t.join(20)
        if t.is_alive():  # wedged: end the pooler so that the connections can close
            p.stop()
            t.join(10)
        assert out == [size], "the client waiting with a large Bind is wedged"


@pytest.mark.pgpilot_only
def test_five_prepared_clients_pool_of_five(pooler_factory):
    """Five psycopg clients at once, each execute(prepare=True) of a 5,000-byte query, on a fresh
    pooler with a pool of 5: all five finish with their own result; SIGINT shutdown completes."""
    p = pooler_factory(settings={"max_prepared_statements": "100", "default_pool_size": "5"})
    q = "SELECT %s::int * 2 /* " + "w" * 5000 + " */"
    conns = [p.connect() for _ in range(5)]
    results = {}

    def work(i):
        results[i] = conns[i].execute(q, (i,), prepare=True).fetchone()[0]

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(5)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    try:
        assert results == {i: i * 2 for i in range(5)}, f"finished: {results}"
        # the pool is not wedged: a sixth client gets a server
        with p.connect() as d:
            assert run_with_timeout(lambda: d.execute("SELECT 6").fetchone()[0], 20) == 6
    finally:
        for c in conns:
            c.close()
    p.signal(signal.SIGINT)
    p.wait_exit(15)


# -- finding 4: prepared-statement hijack across clients


def server_statement_names(p):
    """The names of the prepared statements the (single) server holds, seen by a plain client."""
    with p.connect() as c:
        return [r[0] for r in c.execute("SELECT name FROM pg_prepared_statements",
                                        prepare=False).fetchall()]


HIJACKS = {
    # name: attacker's simple-query text; {n} is a server-side statement name found on the server
    "deallocate": 'DEALLOCATE "{n}"',
    "deallocate_prepare": 'DEALLOCATE "{n}"; PREPARE "{n}"(int) AS SELECT 999999 + 0 * $1',
    "deallocate_all": "DEALLOCATE ALL",
    "discard_all": "DISCARD ALL",
}


@pytest.mark.pgpilot_only
@pytest.mark.parametrize("attack", list(HIJACKS))
def test_prepared_statement_hijack(pooler_factory, attack):
    """Transaction pooling, one shared server: an attacker looks up the server-side names of the
    victim's statements in pg_prepared_statements and DEALLOCATEs them / PREPAREs its own under
    that name / runs DEALLOCATE ALL / DISCARD ALL. The victim's named statement still returns
    the victim's own result every time."""
    p = pooler_factory(settings={"max_prepared_statements": "100", "default_pool_size": "1"})
    victim = p.connect()
    q = "SELECT 100 + %s::int"
    assert victim.execute(q, (0,), prepare=True).fetchone()[0] == 100
    names = [n for n in server_statement_names(p) if not n.startswith("_pg3")]
    assert names, "the victim's statement is not on the server"
    attacker = raw_login(p)
    for n in names:
        try:
            attacker.query(HIJACKS[attack].format(n=n))
        except harness.ServerError:
            pass  # refusing the command is a fine answer too
    got = []
    for i in range(1, 4):
        try:
            got.append(victim.execute(q, (i,), prepare=True).fetchone()[0])
        except psycopg.Error as e:
            got.append(f"{type(e).__name__}: {e}")
    attacker.close()
    victim.close()
    assert got == [101, 102, 103], f"the victim got {got} after {attack}"


# -- finding 6: accept() failing with EMFILE


@pytest.mark.pgpilot_only
def test_emfile_no_busy_loop(pooler_factory, bystander):
    """The pooler runs with 48 file descriptors and 80 clients connect: accept() fails with
    EMFILE. Over 3 s the pooler uses less than half a core and writes fewer than 100 log lines;
    once the extra connections close, new clients work."""
    p = pooler_factory(start=False)
    orig_argv = p.argv
    p.argv = lambda *o: ["prlimit", "--nofile=48:48", "--", *orig_argv(*o)]
    p.start()
    b = bystander(p)
    lines_start = p.log.count("\n")
    socks = []
    for _ in range(80):
        try:
            socks.append(socket.create_connection(("127.0.0.1", p.port), timeout=5))
        except OSError:
            break
    time.sleep(0.5)
    pid = p.proc.pid
    lines0 = p.log.count("\n")
    cpu0, t0 = harness.cpu_seconds(pid), time.monotonic()
    time.sleep(3)
    cpu1, t1 = harness.cpu_seconds(pid), time.monotonic()
    lines1 = p.log.count("\n")
    for s in socks:
        s.close()
    # new clients work once descriptors are free again (the listener may be paused briefly)
    try:
        harness.wait_until(lambda: _login_works(p), 15, interval=0.5, what="a new client")
        recovered = True
    except AssertionError:
        recovered = False
    if lines1 - lines0 >= 100:  # keep the log printed at teardown readable
        log = p.log
        with open(p.log_path, "w") as f:
            f.write("".join(log.splitlines(True)[:lines_start + 50]) + "[log cut by the test]\n")
    share = (cpu1 - cpu0) / (t1 - t0)
    assert share < 0.5, f"the pooler used {share:.0%} of a core while accept() failed"
    assert lines1 - lines0 < 100, f"{lines1 - lines0} log lines in 3 s"
    assert recovered, "no new client could log in once the extra connections closed"
    b.check()


def _login_works(p):
    try:
        with p.connect(connect_timeout=3) as c:
            return c.execute("SELECT 1").fetchone()[0] == 1
    except psycopg.Error:
        return False


# -- finding 11: tracked parameters not applied


def test_long_application_name_timezone_applied(pooler_factory):
    """Pool of one server: a client with TimeZone Asia/Tokyo uses it, then a client with a
    2,000-byte application_name and TimeZone UTC: SHOW TimeZone says UTC on the second."""
    p = pooler_factory(settings={"default_pool_size": "1"})
    a = raw_login(p, TimeZone="Asia/Tokyo")
    assert a.query("SHOW TimeZone") == [("Asia/Tokyo",)]
    a.close()
    b = raw_login(p, TimeZone="UTC", application_name="a" * 2000)
    assert b.query("SHOW TimeZone") == [("UTC",)]
    assert b.query("SELECT 1") == [("1",)]
    b.close()
    with p.connect() as c:
        assert c.execute("SELECT 5").fetchone()[0] == 5


# -- finding 12: whole-message buffering


@pytest.mark.pgpilot_only
def test_declared_1gb_parse_refused(pooler_factory, bystander):
    """Default settings (max_prepared_statements > 0, transaction pooling): a named Parse that
    declares 1 GB is refused with an ErrorResponse 08P01 and the connection closed, without
    reserving the gigabyte (RSS bound); the pooler and the bystander are fine."""
    p = pooler_factory()
    b = bystander(p)
    pid = p.proc.pid
    rss0 = harness.rss_kib(pid)
    r = raw_login(p)
    body = cstr("big") + b"SELECT 1 /* " + b"z" * 60000
    r.send(b"P" + struct.pack("!I", 1 << 30) + body)
    r.sock.settimeout(10)
    try:
        msgs = r.read_until_eof()
    except socket.timeout:
        msgs = None
    growth = harness.rss_kib(pid) - rss0
    r.close()
    assert msgs is not None, "the pooler waits for the rest of a 1 GB Parse"
    errs = [harness.parse_error_fields(body) for t, body in msgs if t == b"E"]
    assert errs and errs[0]["C"] == "08P01", f"got {msgs!r}"
    assert growth < RSS_BOUND_KIB, f"RSS grew by {growth} KiB"
    b.check()


# -- finding 14: a fresh server is not closed or checked as idle at once


def test_fresh_server_not_checked(pooler_factory, pg):
    """A server opened for min_pool_size and never used yet counts as idle since its login: when
    clients take it within server_check_delay no check query runs on it (server_check_query
    records each run in a table here) and it is not closed as idle."""
    pg.create_table("check_runs", "at timestamptz DEFAULT now()")
    p = pooler_factory(settings={
        "min_pool_size": "2", "default_pool_size": "2",
        "server_check_query": "INSERT INTO check_runs DEFAULT VALUES",
        "server_check_delay": "30", "server_idle_timeout": "600"})
    idle = p.connect()  # (PgBouncer fills min_pool_size only while the pool has a client)
    assert idle.execute("SELECT 1").fetchone()[0] == 1
    # the janitor opens the second server of min_pool_size
    harness.wait_until(lambda: len(pg.backends(user="md5user", dbname="appdb")) >= 2, 15,
                       what="min_pool_size servers")
    time.sleep(1.5)
    assert len(pg.backends(user="md5user", dbname="appdb")) == 2
    # two clients in a transaction at once use both servers
    with idle, p.connect() as c1, p.connect() as c2:
        with c1.transaction(), c2.transaction():
            pids = {c1.execute("SELECT pg_backend_pid()").fetchone()[0],
                    c2.execute("SELECT pg_backend_pid()").fetchone()[0]}
    assert len(pids) == 2
    runs = pg.query("SELECT count(*) FROM check_runs", dbname="appdb")[0][0]
    assert runs == 0, f"the check query ran {runs} times on servers younger than 30 s"


@pytest.mark.pgpilot_only
def test_autodb_not_created_before_authentication(pooler_factory, bystander):
    """Finding 7: with a "*" auto-database entry, startup packets naming 200 made-up databases
    with a wrong password create no database object (SHOW DATABASES does not list them); the
    same name is created once a client has authenticated."""
    p = pooler_factory(databases={"appdb": "host=127.0.0.1 port={pgport}",
                                  "*": "host=127.0.0.1 port={pgport}"})
    b = bystander(p)
    for i in range(200):
        with pytest.raises(psycopg.OperationalError):
            p.connect(dbname=f"nodb_{i}", password="wrong-password")
    names = {d["name"] for d in p.admin_dicts("SHOW DATABASES")}
    made_up = sorted(n for n in names if n.startswith("nodb_"))
    assert not made_up, f"created before authentication: {made_up[:5]} ({len(made_up)})"
    # after a successful login the auto-database exists (PostgreSQL then refuses the name)
    with pytest.raises(psycopg.OperationalError):
        p.connect(dbname="nodb_authenticated")
    names = {d["name"] for d in p.admin_dicts("SHOW DATABASES")}
    assert "nodb_authenticated" in names
    b.check()
