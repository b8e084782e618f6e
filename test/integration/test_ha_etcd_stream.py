"""HA: a hostile or broken etcd watch stream must not stop the pooler (issue 8, finding 5).

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

A fake etcd (a small HTTP server in this process) answers the follow-mode agent's range with an
empty prefix and its /v3/watch with "created" followed by megabytes of blank lines, or by one
line longer than the watch line bound (ha/etcd_stream.h, 4 MiB). Meanwhile a client runs
queries through the pooler on a fixed-host database. Once the stream was parsed with one memmove
of the rest per line, and 2 MB of blank lines stopped all traffic for 26.7 s.
"""

import http.server
import json
import os
import socketserver
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

pytestmark = pytest.mark.skipif(not harness.is_pgpilot(), reason="pgpilot only")

BLANK_MB = 2
CREATED = b'{"result":{"header":{"revision":"1"},"created":true}}\n'


class FakeEtcd(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """POST /v3/kv/range: an empty prefix; POST /v3/watch: CREATED then self.payload() (bytes,
    sent in 64 kB writes), then the connection is closed; anything else: an empty header."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, payload):
        self.payload = payload
        self.watch_bytes = 0  # stream bytes the client took (sendall returned)
        self.watches = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.path == "/v3/watch":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            srv = self.server
            with srv.lock:
                srv.watches += 1
            data = CREATED + srv.payload()
            try:
                for i in range(0, len(data), 65536):
                    self.wfile.write(data[i:i + 65536])
                    with srv.lock:
                        srv.watch_bytes += len(data[i:i + 65536])
                self.wfile.flush()
                time.sleep(0.5)
            except OSError:
                pass
            return
        body = json.dumps({"header": {"revision": "1"}, "count": "0"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def follow_pooler(pooler_factory, etcd_url):
    extra = ("[cluster]\nname = pg-test\nnamespace = /service\n"
             f"etcd_endpoints = {etcd_url}\npg_rto = 10\n"
             "pg_conn = user=postgres dbname=postgres\n")
    return pooler_factory(settings={"ha_mode": "follow"}, extra=extra)


def query_gaps(pooler, seconds):
    """Run SELECT 1 through the pooler for <seconds>; (queries, longest gap between two)."""
    n, gap = 0, 0.0
    with pooler.connect() as c:
        last = t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            c.execute("SELECT 1").fetchone()
            now = time.monotonic()
            gap = max(gap, now - last)
            last = now
            n += 1
            time.sleep(0.02)
    return n, gap


def test_blank_line_flood_keeps_traffic_flowing(pooler_factory):
    """The fake etcd streams 2 MB of blank lines on every watch connection: the pooler takes
    several such streams (every byte read), and a client's queries on a fixed-host database
    keep completing meanwhile: no gap between two of them reaches 5 s (the old parser stopped
    everything for 26.7 s per 2 MB)."""
    with FakeEtcd(lambda: b"\n" * (BLANK_MB * 1024 * 1024)) as etcd:
        p = follow_pooler(pooler_factory, etcd.url)
        harness.wait_until(lambda: etcd.watches >= 1, 15, what="the watch to connect")
        n, gap = query_gaps(p, 8)
        with etcd.lock:
            taken, watches = etcd.watch_bytes, etcd.watches
        sys.stderr.write(f"\n{n} queries, longest gap {gap:.3f}s; {watches} watch streams, "
                         f"{taken / 1e6:.1f} MB of blank lines taken\n")
        assert taken >= 2 * BLANK_MB * 1024 * 1024, "the pooler did not read the streams"
        assert gap < 5, f"queries stopped for {gap:.1f}s while the watch stream was parsed"
        assert p.proc.poll() is None


def test_watch_line_too_long_restarts_the_watch(pooler_factory):
    """A watch stream whose line exceeds the 4 MiB bound (5 MiB, no newline) is ended with a
    logged error naming the bound, and the watch connects again."""
    with FakeEtcd(lambda: b"x" * (5 * 1024 * 1024)) as etcd:
        p = follow_pooler(pooler_factory, etcd.url)
        harness.wait_until(lambda: "line too long" in p.log and etcd.watches >= 2, 30,
                           what="the long line to end the watch and a new watch")
        line = next(ln for ln in p.log.splitlines() if "line too long" in ln)
        assert "WARNING" in line and "4194304" in line, line
        n, gap = query_gaps(p, 2)
        assert n > 0 and p.proc.poll() is None
