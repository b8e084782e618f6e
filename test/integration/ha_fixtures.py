"""Fixtures of the HA agent smoke test (test_ha_agent_smoke.py): an etcd on free loopback ports,
PostgreSQL 15 nodes made with initdb / pg_basebackup -R and run by pg_ctl as user postgres
(wal_log_hints on, fsync off), and haprobe, the C driver that runs one HaAgent.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

Everything started here is stopped by PID at teardown; nothing is killed by name.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PG_BIN = "/usr/lib/postgresql/15/bin"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
RUN_USER = "postgres"
PKGS = ["libevent", "libcurl", "jansson", "openssl", "libcares", "libpq"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)


def as_postgres(argv, check=True, timeout=120):
    p = subprocess.run(argv, user=RUN_USER, group=RUN_USER, extra_groups=[],
                       capture_output=True, text=True, timeout=timeout, cwd="/")
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (argv, p.returncode, p.stdout, p.stderr))
    return p


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def build_haprobe(out):
    """Link haprobe against the subsystem archives (make brings them up to date). With
    HA_SMOKE_ASAN=1 in the environment, compile the ha/ sources in under ASan + UBSan instead."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs"] + PKGS, check=True,
                           capture_output=True, text=True).stdout.split()
    base = ["cc", "-std=gnu11", "-D_GNU_SOURCE", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
            "-Wno-unused-parameter", "-I" + ROOT, "-o", out, os.path.join(HERE, "haprobe.c")]
    if os.environ.get("HA_SMOKE_ASAN"):
        srcs = sorted(os.path.join(ROOT, "ha", f) for f in os.listdir(os.path.join(ROOT, "ha"))
                      if f.endswith(".c"))
        subprocess.run(base + ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] +
                       srcs + flags + ["-lm"], check=True, capture_output=True)
        return out
    libs = [os.path.join(ROOT, "build", n) for n in ("libha.a", "libdns.a", "libprotocol.a")]
    subprocess.run(["make", "-C", ROOT] + [os.path.relpath(p, ROOT) for p in libs],
                   check=True, capture_output=True)
    subprocess.run(base + libs + flags + ["-lm"], check=True, capture_output=True)
    return out


class Etcd:
    """A single-member etcd on loopback."""

    def __init__(self, base):
        self.dir = os.path.join(base, "etcd")
        os.makedirs(self.dir)
        self.port = free_port()
        self.peer = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None

    def start(self):
        peer = "http://127.0.0.1:%d" % self.peer
        with open(os.path.join(self.dir, "etcd.log"), "ab") as log:
            self.proc = subprocess.Popen(
                [ETCD, "--name", "t", "--data-dir", os.path.join(self.dir, "data"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", "t=" + peer], stdout=log, stderr=log)

        def healthy():
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    return json.load(r).get("health") == "true"
            except (OSError, ValueError):
                return False
        wait_until(healthy, 20, "etcd to start")

    def get(self, key):
        """The value of one key (str) or None, read straight from the gateway."""
        import base64
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        req = urllib.request.Request(self.url + "/v3/kv/range", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            kvs = json.load(r).get("kvs")
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class PgNode:
    """A PostgreSQL 15 data directory run with pg_ctl as postgres on 127.0.0.1:port. Settings
    live in postgresql.conf (not on the command line) so that the agent's own pg_ctl start keeps
    them."""

    def __init__(self, base, name):
        self.name = name
        self.dir = os.path.join(base, name)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        os.makedirs(self.dir)
        pw = pwd.getpwnam(RUN_USER)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def conf(self):
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# ha smoke test\nport = %d\nlisten_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = '%s'\nfsync = off\nsynchronous_commit = off\n"
                    "wal_level = replica\nwal_log_hints = on\nmax_wal_senders = 10\n"
                    "hot_standby = on\nshared_buffers = 16MB\nmax_connections = 40\n"
                    "wal_keep_size = 64MB\nlog_min_messages = warning\n" % (self.port, self.dir))

    def initdb(self):
        as_postgres([PG_BIN + "/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                     "-N", "-E", "UTF8", "--locale=C"])
        self.conf()
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 trust\n"
                    "local replication all trust\nhost replication all 127.0.0.1/32 trust\n")

    def basebackup(self, primary):
        as_postgres([PG_BIN + "/pg_basebackup", "-D", self.data, "-h", "127.0.0.1", "-p",
                     str(primary.port), "-U", "postgres", "-R", "-X", "stream"])
        self.conf()

    def start(self):
        as_postgres([PG_BIN + "/pg_ctl", "start", "-D", self.data, "-w", "-t", "30", "-l",
                     os.path.join(self.dir, "pg.log")])

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def stop(self):
        pid = self.postmaster_pid()
        if pid and pid_alive(pid):
            as_postgres([PG_BIN + "/pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w"],
                        check=False)

    def kill9(self):
        pid = self.postmaster_pid()
        assert pid, "no postmaster.pid in " + self.data
        os.kill(pid, signal.SIGKILL)

    def conninfo(self):
        return "host=127.0.0.1 port=%d user=postgres dbname=postgres" % self.port

    def sql(self, q):
        p = as_postgres([PG_BIN + "/psql", "-X", "-At", "-d", self.conninfo(), "-c", q],
                        check=False, timeout=10)
        return p.stdout.strip() if p.returncode == 0 else None


class Agent:
    """One haprobe process; its output lines are collected by a reader thread."""

    def __init__(self, binary, base, node, etcd, cluster, extra=None):
        self.node = node
        self.cfg = os.path.join(base, "agent-%s.conf" % node.name)
        opts = {"ha_mode": "agent", "name": cluster, "namespace": "/service",
                "etcd_endpoints": etcd.url, "member": node.name, "pg_conn": node.conninfo(),
                "pg_data": node.data, "pg_bin": PG_BIN, "replication_conn": "user=postgres",
                "pg_rto": "10"}
        opts.update(extra or {})
        with open(self.cfg, "w") as f:
            for k, v in opts.items():
                f.write("%s = %s\n" % (k, v))
        self.lines = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([binary, self.cfg], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def find(self, text, since=0.0):
        """The time of the first line containing text (after since), or None."""
        with self.lock:
            for t, line in self.lines:
                if t >= since and text in line:
                    return t
        return None

    def wait(self, text, timeout, since=0.0):
        return wait_until(lambda: self.find(text, since), timeout,
                          "%s: %r" % (self.node.name, text))

    def output(self):
        with self.lock:
            return "\n".join(line for _, line in self.lines)

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class HaSetup:
    """etcd + nodes + agents in one temp dir, torn down in reverse order."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="pgpilot-ha-")
        os.chmod(self.base, 0o755)
        self.etcd = Etcd(self.base)
        self.nodes = []
        self.agents = []
        self.binary = None

    def node(self, name):
        n = PgNode(self.base, name)
        self.nodes.append(n)
        return n

    def agent(self, node, cluster="pgt", extra=None):
        a = Agent(self.binary, self.base, node, self.etcd, cluster, extra)
        self.agents.append(a)
        return a

    def teardown(self, keep_logs_on=None):
        for a in self.agents:
            a.stop()
        for n in self.nodes:
            n.stop()
        self.etcd.stop()
        shutil.rmtree(self.base, ignore_errors=True)
