"""Integration tests of ha/etcd (the asynchronous etcd v3 client) against a real etcd.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

A small C driver, etcdprobe.c, links the client and runs commands read from stdin on a libevent
loop, printing one JSON object per result or watch event. Each test starts its own etcd (temp data
dir, free loopback ports) and kills it by PID at the end, so tests can stop, pause, restart and
compact it freely.
"""

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import base64

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
ETCD = "/usr/bin/etcd"
PKGS = ["libevent", "libcurl", "jansson", "openssl", "libcares"]

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD), reason="etcd-server not installed")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pkg_flags():
    out = subprocess.run(["pkg-config", "--cflags", "--libs"] + PKGS, check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def build_probe(out, sanitize=False):
    """Link etcdprobe against the subsystem archives; if they cannot be brought up to date (a
    module of another subsystem being edited), compile the client sources straight in. The
    sanitizer build always compiles the sources, so that the client itself is instrumented."""
    base = ["cc", "-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
            "-Wno-unused-parameter", "-I" + ROOT, "-o", out, os.path.join(HERE, "etcdprobe.c")]
    sources = [os.path.join(ROOT, "ha", n) for n in ("etcd.c", "etcd_json.c", "etcd_stream.c")]
    if sanitize:
        cmd = base + ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] + sources + \
            pkg_flags() + ["-lm"]
        subprocess.run(cmd, check=True, capture_output=True)
        return out
    libs = [os.path.join(ROOT, "build", n) for n in ("libha.a", "libdns.a", "libprotocol.a")]
    made = subprocess.run(["make", "-k", "-C", ROOT] + [os.path.relpath(p, ROOT) for p in libs],
                          capture_output=True, text=True)
    if made.returncode == 0:
        r = subprocess.run(base + libs + pkg_flags() + ["-lm"], capture_output=True, text=True)
        if r.returncode == 0:
            return out
    subprocess.run(base + sources + pkg_flags() + ["-lm"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def probe_bin(tmp_path_factory):
    return build_probe(str(tmp_path_factory.mktemp("probe") / "etcdprobe"))


class Etcd:
    """One single-member etcd on loopback; restartable on the same ports and data."""

    def __init__(self, extra=()):
        self.dir = tempfile.mkdtemp(prefix="pgpilot-etcd-")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = "http://127.0.0.1:%d" % self.client_port
        self.extra = list(extra)
        self.proc = None
        self.log = open(os.path.join(self.dir, "etcd.log"), "ab")

    def start(self):
        peer = "http://127.0.0.1:%d" % self.peer_port
        self.proc = subprocess.Popen(
            [ETCD, "--name", "t", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "t=" + peer] + self.extra,
            stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if json.load(r).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("etcd did not start; log in " + self.dir)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def api(self, path, body, token=None):
        """A direct JSON gateway call (setup and fault injection, not the code under test)."""
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        if token:
            req.add_header("Authorization", token)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def destroy(self):
        self.stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def b64(s):
    return base64.b64encode(s.encode()).decode()


@pytest.fixture
def etcd_factory():
    made = []

    def make(extra=()):
        e = Etcd(extra)
        made.append(e)
        e.start()
        return e
    yield make
    for e in made:
        e.destroy()


@pytest.fixture
def etcd_server(etcd_factory):
    return etcd_factory()


class Probe:
    """etcdprobe as a subprocess: commands in, JSON lines out (collected by a reader thread)."""

    def __init__(self, binary, endpoints, *args):
        self.proc = subprocess.Popen([binary, "--endpoints", endpoints] + list(args),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.msgs = []
        self.q = queue.Queue()
        self.seq = 0
        threading.Thread(target=self._read, daemon=True).start()
        self.init = self.wait(lambda m: m.get("op") == "init", 10)

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(json.loads(line))
        self.q.put(None)

    def _pump(self, timeout):
        try:
            m = self.q.get(timeout=timeout)
        except queue.Empty:
            return False
        if m is None:
            self.msgs.append({"op": "eof"})
            return True
        self.msgs.append(m)
        return True

    def wait(self, pred, timeout, start=0):
        """First message at index >= start matching pred, waiting up to timeout seconds."""
        deadline = time.time() + timeout
        i = start
        while True:
            while i < len(self.msgs):
                if self.msgs[i].get("op") == "eof" and not pred(self.msgs[i]):
                    raise AssertionError("probe exited; got %s\nstderr: %s" %
                                         (self.msgs, self.proc.stderr.read()))
                if pred(self.msgs[i]):
                    return self.msgs[i]
                i += 1
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("timed out waiting; got %s" % self.msgs)
            self._pump(left)

    def mark(self):
        """Index to wait from, so that older messages are not matched."""
        while self._pump(0):
            pass
        return len(self.msgs)

    def send(self, *words):
        self.seq += 1
        tag = "t%d" % self.seq
        self.proc.stdin.write(" ".join([tag] + [str(w) for w in words]) + "\n")
        self.proc.stdin.flush()
        return tag

    def call(self, *words, timeout=10):
        tag = self.send(*words)
        return self.wait(lambda m: m.get("tag") == tag, timeout)

    def logs(self, needle):
        self.mark()
        return [m for m in self.msgs if m.get("op") == "log" and needle in m.get("msg", "")]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("q quit\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def probe_factory(probe_bin):
    made = []

    def make(endpoints, *args, binary=None):
        p = Probe(binary or probe_bin, endpoints, *args)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


@pytest.mark.timeout(60)
def test_grant_put_with_lease_and_range(etcd_server, probe_factory):
    """A granted lease carries a put; range returns the kv with its lease and revisions."""
    p = probe_factory(etcd_server.url)
    g = p.call("grant", 10)
    assert g["ok"] and g["ttl"] == 10 and int(g["id"]) > 0
    assert p.call("put", "/svc/a/leader", "node-1", g["id"])["ok"]
    r = p.call("get", "/svc/a/leader")
    assert r["ok"] and r["count"] == 1
    kv = r["kvs"][0]
    assert (kv["key"], kv["value"], str(kv["lease"])) == ("/svc/a/leader", "node-1", g["id"])
    assert kv["create"] == kv["mod"] == r["revision"] and kv["version"] == 1
    t = p.call("ttl", g["id"])
    assert t["ok"] and t["granted_ttl"] == 10 and 0 < t["ttl"] <= 10
    assert [k["key"] for k in t["kvs"]] == ["/svc/a/leader"]
    # a miss: no kvs, count 0; prefix range and delete
    assert p.call("put", "/svc/a/members/x", "{}")["ok"]
    miss = p.call("get", "/svc/nothing")
    assert miss["ok"] and miss["kvs"] == [] and miss["count"] == 0
    pre = p.call("getprefix", "/svc/a/")
    assert [k["key"] for k in pre["kvs"]] == ["/svc/a/leader", "/svc/a/members/x"]
    assert p.call("delprefix", "/svc/a/members/")["deleted"] == 1


@pytest.mark.timeout(60)
def test_create_if_absent_won_and_lost(etcd_server, probe_factory):
    """The create-if-absent txn is won once; the loser learns the owner from the failure range."""
    p = probe_factory(etcd_server.url)
    l1 = p.call("grant", 30)["id"]
    l2 = p.call("grant", 30)["id"]
    won = p.call("create", "/svc/b/leader", "node-1", l1)
    assert won["ok"] and won["succeeded"] and won["responses"][0]["type"] == "put"
    lost = p.call("create", "/svc/b/leader", "node-2", l2)
    assert lost["ok"] and not lost["succeeded"]
    assert lost["owner"] == "node-1"
    assert str(lost["responses"][0]["kvs"][0]["lease"]) == l1


@pytest.mark.timeout(60)
def test_owner_guarded_txn(etcd_server, probe_factory):
    """The leader's guarded write succeeds with its lease and fails with any other lease."""
    p = probe_factory(etcd_server.url)
    mine = p.call("grant", 30)["id"]
    other = p.call("grant", 30)["id"]
    assert p.call("create", "/svc/c/leader", "node-1", mine)["succeeded"]
    ok = p.call("guard", "/svc/c/leader", "node-1", mine, "/svc/c/status", "opt1")
    assert ok["ok"] and ok["succeeded"]
    bad = p.call("guard", "/svc/c/leader", "node-1", other, "/svc/c/status", "opt2")
    assert bad["ok"] and not bad["succeeded"]
    bad = p.call("guard", "/svc/c/leader", "node-2", mine, "/svc/c/status", "opt3")
    assert bad["ok"] and not bad["succeeded"]
    assert p.call("get", "/svc/c/status")["kvs"][0]["value"] == "opt1"


@pytest.mark.timeout(60)
def test_keepalive_of_revoked_lease_reports_dead(etcd_server, probe_factory):
    """keepalive works on a live lease; after revoke it reports the lease dead (gRPC 5)."""
    p = probe_factory(etcd_server.url)
    lease = p.call("grant", 20)["id"]
    assert p.call("put", "/svc/d/k", "v", lease)["ok"]
    ka = p.call("keepalive", lease)
    assert ka["ok"] and ka["ttl"] == 20
    assert p.call("revoke", lease)["ok"]
    assert p.call("get", "/svc/d/k")["kvs"] == []  # attached keys go with the lease
    dead = p.call("keepalive", lease)
    assert not dead["ok"] and dead["code"] == 5 and dead["ttl"] == 0
    assert "expired" in dead["error"]
    again = p.call("revoke", lease)
    assert not again["ok"] and again["http"] == 404 and again["code"] == 5
    assert "lease not found" in again["error"]


@pytest.mark.timeout(60)
def test_lease_expiry_arrives_as_delete_on_watch(etcd_server, probe_factory):
    """A key on an expiring lease shows up as a DELETE event (with prev_kv) on the watch."""
    p = probe_factory(etcd_server.url)
    assert p.call("watch", "/svc/e/")["ok"]
    p.wait(lambda m: m.get("op") == "watch_created", 10)
    lease = p.call("grant", 2)["id"]
    assert p.call("put", "/svc/e/leader", "node-1", lease)["ok"]
    put = p.wait(lambda m: m.get("op") == "event", 10)
    assert (put["type"], put["key"], put["value"]) == ("PUT", "/svc/e/leader", "node-1")
    t0 = time.time()
    dele = p.wait(lambda m: m.get("op") == "event" and m["type"] == "DELETE", 15)
    assert dele["key"] == "/svc/e/leader" and dele["prev_value"] == "node-1"
    assert dele["mod"] > put["mod"]
    assert time.time() - t0 < 10


@pytest.mark.timeout(90)
def test_watch_survives_etcd_restart(etcd_server, probe_factory):
    """Stopping etcd breaks the stream (DISCONNECTED); after restart the watch resumes from the
    last revision + 1 (RECONNECTED) and later events arrive."""
    p = probe_factory(etcd_server.url)
    assert p.call("watch", "/svc/f/")["ok"]
    p.wait(lambda m: m.get("op") == "watch_created", 10)
    assert p.call("put", "/svc/f/k1", "a")["ok"]
    e1 = p.wait(lambda m: m.get("op") == "event", 10)
    m = p.mark()
    etcd_server.stop()
    st = p.wait(lambda x: x.get("op") == "watch_status", 15, m)
    assert st["status"] == "disconnected" and st["next_revision"] == e1["mod"] + 1
    # requests fail cleanly while etcd is down
    down = p.call("get", "/svc/f/k1")
    assert not down["ok"] and "could not reach etcd" in down["error"]
    time.sleep(1)
    m = p.mark()
    etcd_server.start()
    st = p.wait(lambda x: x.get("op") == "watch_status" and x["status"] == "reconnected", 20, m)
    assert st["next_revision"] == e1["mod"] + 1
    assert p.call("put", "/svc/f/k2", "b")["ok"]
    e2 = p.wait(lambda x: x.get("op") == "event" and x["key"] == "/svc/f/k2", 10, m)
    assert e2["mod"] == e1["mod"] + 1
    # no duplicate of the pre-restart event
    assert not [x for x in p.msgs[m:] if x.get("op") == "event" and x["key"] == "/svc/f/k1"]


@pytest.mark.timeout(60)
def test_first_endpoint_dead_second_used(etcd_server, probe_factory):
    """With a dead first endpoint, requests and the watch go to the second one, and the client
    remembers it (the switch happens once)."""
    dead = "http://127.0.0.1:%d" % free_port()
    p = probe_factory(dead + "," + etcd_server.url)
    r = p.call("put", "/svc/g/k", "v")
    assert r["ok"], r
    for _ in range(3):
        r = p.call("get", "/svc/g/k")
        assert r["ok"] and r["kvs"][0]["value"] == "v"
    assert len(p.logs("switching to etcd endpoint")) == 1
    assert p.call("watch", "/svc/g/")["ok"]
    p.wait(lambda m: m.get("op") == "watch_created", 10)
    # only dead endpoints: a clear error
    q = probe_factory(dead)
    r = q.call("get", "/svc/g/k")
    assert not r["ok"] and "could not reach etcd" in r["error"] and r["http"] == 0


@pytest.mark.timeout(90)
def test_request_timeout_when_etcd_is_stopped(etcd_server, probe_factory):
    """A SIGSTOPped etcd accepts connections but never answers: requests fail after the
    configured timeout, the silent watch is declared dead, and all recovers after SIGCONT."""
    p = probe_factory(etcd_server.url, "--timeout-ms", "700", "--watch-idle-ms", "1000")
    assert p.call("watch", "/svc/h/")["ok"]
    p.wait(lambda m: m.get("op") == "watch_created", 10)
    m = p.mark()
    etcd_server.pause()
    try:
        r = p.call("put", "/svc/h/k", "v", timeout=10)
        assert not r["ok"] and "timed out" in r["error"]
        assert 600 <= r["elapsed_ms"] <= 2500, r
        # a retry-safe read tries every endpoint (one here) and is bounded the same way
        r = p.call("get", "/svc/h/k", timeout=10)
        assert not r["ok"] and r["elapsed_ms"] <= 2500
        st = p.wait(lambda x: x.get("op") == "watch_status", 15, m)
        assert st["status"] == "disconnected"
    finally:
        etcd_server.resume()
    m = p.mark()
    p.wait(lambda x: x.get("op") == "watch_status" and x["status"] == "reconnected", 20, m)
    assert p.call("put", "/svc/h/k2", "v2")["ok"]
    p.wait(lambda x: x.get("op") == "event" and x["key"] == "/svc/h/k2", 10, m)


@pytest.mark.timeout(60)
def test_compaction_cancel_resyncs(etcd_server, probe_factory):
    """A watch from a compacted revision is canceled by etcd; the client re-reads the prefix,
    hands the snapshot to the owner (COMPACTED) and watches on from after it."""
    p = probe_factory(etcd_server.url)
    for i in range(5):
        assert p.call("put", "/svc/i/k%d" % i, "v%d" % i)["ok"]
    rev = p.call("get", "/svc/i/k0")["revision"]
    etcd_server.api("/v3/kv/compaction", {"revision": str(rev), "physical": True})
    m = p.mark()
    assert p.call("watch", "/svc/i/", 2)["ok"]
    st = p.wait(lambda x: x.get("op") == "watch_status", 15, m)
    assert st["status"] == "compacted"
    assert st["snapshot_revision"] == rev and st["next_revision"] == rev + 1
    assert sorted(k["key"] for k in st["kvs"]) == ["/svc/i/k%d" % i for i in range(5)]
    assert p.call("put", "/svc/i/k9", "x")["ok"]
    e = p.wait(lambda x: x.get("op") == "event", 10, m)
    assert e["key"] == "/svc/i/k9" and e["mod"] == rev + 1
    assert p.logs("hit compaction")


@pytest.mark.timeout(60)
def test_token_auth_and_reauthentication(etcd_factory, probe_factory):
    """With auth enabled the client logs in, sends the bare token, and logs in again by itself
    when the token expires (etcd started with a 2 s token TTL); wrong passwords fail clearly."""
    e = etcd_factory(extra=["--auth-token-ttl", "2"])
    e.api("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
    e.api("/v3/auth/user/grant", {"user": "root", "role": "root"})
    e.api("/v3/auth/enable", {})
    # the gateway refuses anonymous requests now
    with pytest.raises(urllib.error.HTTPError):
        e.api("/v3/kv/put", {"key": b64("/x"), "value": b64("y")})
    p = probe_factory(e.url, "--user", "root", "--password", "rootpw")
    assert p.call("put", "/svc/j/k", "v")["ok"]
    assert p.call("watch", "/svc/j/")["ok"]
    p.wait(lambda m: m.get("op") == "watch_created", 10)
    time.sleep(3.5)  # token expired
    r = p.call("get", "/svc/j/k")
    assert r["ok"], r
    assert r["kvs"][0]["value"] == "v"
    assert p.call("put", "/svc/j/k2", "v2")["ok"]
    p.wait(lambda m: m.get("op") == "event" and m["key"] == "/svc/j/k2", 15)
    bad = probe_factory(e.url, "--user", "root", "--password", "nope")
    r = bad.call("get", "/svc/j/k")
    assert not r["ok"] and "could not authenticate" in r["error"]


@pytest.mark.timeout(120)
def test_free_with_requests_in_flight_under_asan(etcd_server, probe_factory, tmp_path):
    """Freeing the client with requests in flight, inside a callback, and stopping watches are
    clean under AddressSanitizer + UBSan (the client sources are compiled instrumented)."""
    binary = build_probe(str(tmp_path / "etcdprobe-asan"), sanitize=True)
    p = probe_factory(etcd_server.url, binary=binary)
    assert p.call("watch", "/svc/k/")["ok"]
    p.wait(lambda m: m.get("op") == "watch_created", 10)
    assert p.call("unwatch")["ok"]
    assert p.call("watch", "/svc/k/")["ok"]
    burst = p.send("burst", 20, "/svc/k/x")
    assert p.call("quit")["op"] == "quit"
    assert p.close() == 0
    p.wait(lambda m: m.get("op") == "eof", 10)
    # every accepted request came back once: answered, or canceled by the free
    done = [m for m in p.msgs if m.get("tag") == burst]
    assert len(done) == 20
    assert all(m["ok"] or (m["code"] == 1 and "shutting down" in m["error"]) for m in done)
    err = p.proc.stderr.read()
    assert "ERROR: AddressSanitizer" not in err and "runtime error" not in err, err

    q = probe_factory(etcd_server.url, binary=binary)
    q.send("burst", 5, "/svc/k/x")
    tag = q.send("freeinside", "/svc/k/x")
    q.wait(lambda m: m.get("op") == "freed", 10)
    assert q.close() == 0
    q.wait(lambda m: m.get("op") == "eof", 10)
    # freeinside sent three requests; the free came from the first one's callback, and the
    # others came back once each: answered before it, or canceled by it
    done = [m for m in q.msgs if m.get("tag") == tag]
    assert len(done) == 3, done
    assert len([m for m in done if "code" not in m]) == 1  # the freeing callback's own line
    assert all(m["ok"] or (m["code"] == 1 and "shutting down" in m["error"])
               for m in done if "code" in m)
    err = q.proc.stderr.read()
    assert "ERROR: AddressSanitizer" not in err and "runtime error" not in err, err


@pytest.mark.timeout(30)
def test_bad_endpoint_configuration(probe_bin):
    """Configuration errors are reported by etcd_client_new, not discovered later."""
    for eps, msg in (("ftp://127.0.0.1:1", "invalid etcd endpoint"),
                     ("", "no etcd endpoint given"),
                     ("http://", "invalid etcd endpoint")):
        r = subprocess.run([probe_bin, "--endpoints", eps], input="", capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 2
        assert msg in json.loads(r.stdout.splitlines()[0])["error"]
