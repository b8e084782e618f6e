"""Cancel requests through the pooler."""

import struct
import threading
import time

import psycopg
import pytest

import harness


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_cancel_running_query(pooler_factory, mode):
    """pg_sleep(10) cancelled with conn.cancel() fails with 57014 within a few seconds, and the
    same connection runs the next query."""
    p = pooler_factory(settings={"pool_mode": mode})
    with p.connect() as c:
        timer = threading.Timer(0.5, c.cancel)
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as ei:
            c.execute("SELECT pg_sleep(10)")
        elapsed = time.monotonic() - t0
        timer.join()
        assert ei.value.sqlstate == "57014"
        assert elapsed < 4, f"cancel took {elapsed:.1f}s"
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_cancel_hits_only_its_own_query(pooler_factory):
    """Two clients run pg_sleep at once; cancelling one leaves the other's query intact."""
    p = pooler_factory()
    with p.connect() as a, p.connect() as b:
        res = {}

        def run_b():
            try:
                res["b"] = b.execute("SELECT pg_sleep(1.5), 'b done'").fetchone()[1]
            except psycopg.Error as e:
                res["b"] = e

        t = threading.Thread(target=run_b)
        t.start()
        threading.Timer(0.3, a.cancel).start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            a.execute("SELECT pg_sleep(10)")
        t.join(10)
        assert res["b"] == "b done"


def test_cancel_idle_client_is_harmless(pooler_factory):
    """A cancel request for a client with no query running does nothing bad: the client's next
    query succeeds."""
    p = pooler_factory()
    with p.connect() as c:
        c.execute("SELECT 1")
        c.cancel()
        time.sleep(0.3)
        assert c.execute("SELECT 2").fetchone()[0] == 2


def test_bogus_cancel_key(pooler):
    """A CancelRequest with an unknown key is dropped: connection closed, nothing else happens."""
    r = harness.RawClient(pooler.port)
    r.send(struct.pack("!iiii", 16, 80877102, 12345, 67890))
    assert r.is_closed(5)
    with pooler.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
