"""Bad input from clients on raw sockets: each gets an ErrorResponse (parsed from the bytes),
the pooler stays up, and a client connected meanwhile is unaffected."""

import struct

import pytest

import harness

BEFORE_STARTUP = {
    # name: bytes sent as the first thing on the connection
    "http_request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad_protocol_version": struct.pack("!ii", 8, 0x00BC614E),
    "length_2_31": struct.pack("!I", 2 ** 31) + b"\0\0\0\0",
    "length_too_small": struct.pack("!i", 3) + b"xxxx",
    "huge_startup_length": struct.pack("!ii", 100000, 196608) + b"a" * 1000,
    "startup_without_user": harness.startup_packet({"database": "appdb"}),
}


@pytest.fixture
def watched(pooler_factory):
    """A pooler (max_packet_size=8192) and a client connected to it before the bad input."""
    p = pooler_factory(settings={"max_packet_size": "8192"})
    c = p.connect()
    assert c.execute("SELECT 1").fetchone()[0] == 1
    yield p, c
    assert p.running()
    assert c.execute("SELECT 2").fetchone()[0] == 2, "the bystander client was affected"
    with p.connect() as d:
        assert d.execute("SELECT 3").fetchone()[0] == 3
    c.close()


def error_then_close(r, timeout=5):
    """Read until EOF; return the fields of the first ErrorResponse (AssertionError if none)."""
    r.sock.settimeout(timeout)
    msgs = r.read_until_eof()
    errs = [harness.parse_error_fields(b) for t, b in msgs if t == b"E"]
    assert errs, f"no ErrorResponse before close, got {msgs!r}"
    return errs[0]


@pytest.mark.parametrize("name", list(BEFORE_STARTUP))
def test_garbage_before_startup(watched, name):
    """Garbage instead of a startup packet: ErrorResponse with SQLSTATE 08P01, then close."""
    p, _ = watched
    r = harness.RawClient(p.port)
    r.send(BEFORE_STARTUP[name])
    err = error_then_close(r)
    if name == "bad_protocol_version" and harness.is_pgpilot():
        # PostgreSQL itself answers an unsupported protocol version with 0A000
        assert err["C"] in ("08P01", "0A000")
    else:
        assert err["C"] == "08P01"
    assert err["S"] == "FATAL"
    assert err.get("M")


def test_truncated_startup_then_close(watched):
    """Half a startup packet, then the client closes: nothing to answer, the pooler carries on."""
    p, _ = watched
    r = harness.RawClient(p.port)
    pkt = harness.startup_packet({"user": "md5user", "database": "appdb"})
    r.send(pkt[: len(pkt) // 2])
    r.close()


def test_truncated_message_after_login_then_close(watched, pg):
    """A logged-in client sends half a Query message and vanishes: the pooler frees the client
    (and its server is not left mid-query)."""
    p, _ = watched
    r = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    r.send(b"Q" + struct.pack("!i", 100) + b"SELECT ")
    r.abort()
    harness.wait_until(lambda: p.pool()["cl_active"] == 1, 5, what="client freed")


def test_oversized_packet(watched):
    """After login, a message longer than max_packet_size: ErrorResponse 08P01 and close."""
    p, _ = watched
    r = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    r.send(b"Q" + struct.pack("!i", 100000) + b"x" * 20000)
    err = error_then_close(r)
    assert err["C"] == "08P01"


def test_unknown_message_type(watched):
    """After login, a message with an unknown type byte gets an ErrorResponse: PgBouncer forwards
    it and PostgreSQL answers 08P01 and closes; pgpilot may answer 08P01, or 08006 when it
    forwarded it and lost the server (then the client may stay connected)."""
    p, _ = watched
    r = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    r.send(harness.message(b"\x01", b"junk"))
    r.sock.settimeout(5)
    err = r.expect_error()
    assert err["C"] in (("08P01", "08006") if harness.is_pgpilot() else ("08P01",))
    m = r.read_message()
    if m is not None:  # still connected: it must be usable
        assert m[0] == b"Z"
        assert r.query("SELECT 1") == [("1",)]


def test_unknown_database(watched):
    """Startup for a database the pooler does not know: 3D000 (08P01 on PgBouncer) with
    'no such database: nosuchdb'."""
    p, _ = watched
    with pytest.raises(harness.ServerError) as ei:
        harness.RawClient(p.port).startup("md5user", "nosuchdb", "md5pass")
    assert ei.value.sqlstate == harness.sqlstate("3D000")
    assert ei.value.message == "no such database: nosuchdb"


def test_ssl_request_answered_n(watched):
    """SSLRequest is answered 'N' (no TLS configured) and a normal startup on the same socket
    works."""
    p, _ = watched
    r = harness.RawClient(p.port)
    r.send(harness.ssl_request())
    assert r.read_byte() == b"N"
    r.startup("md5user", "appdb", "md5pass")
    assert r.query("SELECT 40 + 2") == [("42",)]


def test_gssenc_request_refused(watched):
    """GSSENCRequest is answered 'N' (or the connection closed with an error), never crashes."""
    p, _ = watched
    r = harness.RawClient(p.port)
    r.send(struct.pack("!ii", 8, 80877104))
    b = r.read_byte()
    if b == b"N":
        r.startup("md5user", "appdb", "md5pass")
        assert r.query("SELECT 1") == [("1",)]
    else:
        assert b in (None, b"E")


def test_many_bad_clients(watched):
    """200 garbage connections in a row: the pooler survives and leaks no client slots."""
    p, _ = watched
    for i in range(200):
        r = harness.RawClient(p.port)
        r.send(BEFORE_STARTUP["http_request"] if i % 2 else BEFORE_STARTUP["length_2_31"])
        r.close()
    lists = dict(p.admin("SHOW LISTS")[1])
    harness.wait_until(lambda: dict(p.admin("SHOW LISTS")[1])["used_clients"] <= 3, 5,
                       what="bad clients freed")
    assert lists["databases"] >= 2
