"""HA cluster fixtures for the pgpilot integration tests, the demo and bench/failover.py.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

An HaCluster is, in one temp dir: an etcd on loopback ports; N PostgreSQL 15 nodes, each on its
own loopback address (127.0.0.11, .12, ...) and free port, node 1 a primary and the others
streaming replicas made with pg_basebackup -R; one pgpilot per node (ha_mode = agent, its own
free port on 127.0.0.1); optionally a TCP proxy per pgpilot between it and etcd, so that one
node can be cut off from etcd; optionally a [dns] section. Helpers find the primary (SHOW CLUSTER
or the nodes themselves), kill a node with SIGKILL, wait for a condition with a deadline, and run
a writer that records every acknowledged commit and where it ran.

Every process is stopped by its PID: pgpilots are our children; PostgreSQL is started with pg_ctl
(so that an agent can restart it the same way), and its postmaster PID is read from
postmaster.pid each time, because an agent may have restarted it in between.
"""

import asyncio
import atexit
import base64
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import sys
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
PG_BIN = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
PGPILOT_BIN = os.environ.get("PGPILOT_BIN", os.path.join(REPO, "pgpilot"))
ETCD_BIN = os.environ.get("ETCD_BIN", "/usr/bin/etcd")
KEEP_TMP = os.environ.get("KEEP_TMP", "") not in ("", "0")
RUN_USER = "postgres"
# Temp dirs go to tmpfs when there is one: initdb, pg_basebackup and WAL are several times faster.
TMP_ROOT = os.environ.get("HA_TMPDIR") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)

CLUSTER_NAME = "pg-test"
NAMESPACE = "/service"
APP_USER, APP_PASSWORD, APP_DB = "app", "apppass", "app"
ADMIN_USER, ADMIN_PASSWORD = "admin", "adminpass"
REPL_USER, REPL_PASSWORD = "replicator", "rep"

# Every PID started here, for the end-of-run check (pid -> description).
STARTED = {}
_started_lock = threading.Lock()


def _register(pid, what):
    with _started_lock:
        STARTED[pid] = what


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def alive_started():
    with _started_lock:
        items = list(STARTED.items())
    return [(pid, what) for pid, what in items if pid_alive(pid)]


def wait_for(pred, timeout, interval=0.1, what="condition"):
    """Poll pred() until it returns a true value and return it; AssertionError at the deadline
    (pred's exceptions count as 'not yet' and the last one is shown)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - a probe that fails is "not yet"
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} "
                                 f"(last: {last!r})")
        time.sleep(interval)


_ports_lock = threading.Lock()
_ports_given = set()


def free_port(host="127.0.0.1", udp=False):
    """A TCP port free on host (and for UDP too when udp), not handed out before by us."""
    with _ports_lock:
        for _ in range(100):
            t = socket.socket()
            t.bind((host, 0))
            port = t.getsockname()[1]
            ok = port not in _ports_given
            if ok and udp:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind((host, port))
                except OSError:
                    ok = False
                u.close()
            t.close()
            if ok:
                _ports_given.add(port)
                return port
    raise RuntimeError("no free port")


def postgres_ids():
    pw = pwd.getpwnam(RUN_USER)
    return pw.pw_uid, pw.pw_gid


def chown_tree(path):
    if os.geteuid() != 0:
        return
    uid, gid = postgres_ids()
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for n in files + dirs:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(root, n), uid, gid)


def _as_postgres():
    if os.geteuid() != 0:
        return {}
    uid, gid = postgres_ids()
    return {"user": uid, "group": gid, "extra_groups": []}


def run_pg(argv, check=True, timeout=120, **kw):
    """A short command as the postgres user; CompletedProcess (text)."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **_as_postgres(),
                       **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p


def proc_children(pid):
    """PIDs whose parent is pid (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d))
    return out


def kill_pids(pids, sig):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"(no log: {e})"


# ---------------------------------------------------------------------------------------------
# etcd


class Etcd:
    """One single-member etcd on 127.0.0.1 with a temp data dir; restartable on the same ports
    and data (stop() / start())."""

    def __init__(self, base):
        self.dir = os.path.join(base, "etcd")
        os.makedirs(self.dir, exist_ok=True)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.log_path = os.path.join(self.dir, "etcd.log")
        self.proc = None

    def start(self, timeout=20):
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [ETCD_BIN, "--name", "e1", "--data-dir", os.path.join(self.dir, "data"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", "e1=" + peer, "--log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        _register(self.proc.pid, "etcd")
        wait_for(lambda: self.proc.poll() is None and self.healthy(), timeout, 0.1,
                 "etcd to be healthy")

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return json.load(r).get("health") == "true"
        except (OSError, ValueError):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("etcd exited:\n" + tail(self.log_path))
            return False

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def _post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=3) as r:
            return json.load(r)

    @staticmethod
    def _b64(s):
        return base64.b64encode(s.encode()).decode()

    def get(self, key):
        """The value of key (str) or None."""
        r = self._post("/v3/kv/range", {"key": self._b64(key)})
        kvs = r.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def get_prefix(self, prefix):
        """{key: value} under prefix."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        r = self._post("/v3/kv/range", {"key": self._b64(prefix), "range_end": self._b64(end)})
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in r.get("kvs") or []}

    def put(self, key, value):
        self._post("/v3/kv/put", {"key": self._b64(key), "value": self._b64(value)})

    def delete(self, key):
        self._post("/v3/kv/deleterange", {"key": self._b64(key)})


# ---------------------------------------------------------------------------------------------
# TCP proxy (to cut one pgpilot off etcd)


class TcpProxy:
    """A TCP forwarder 127.0.0.1:port -> target, on an asyncio loop in a thread.

    cut("stop"): close the listener and reset every open connection (the pgpilot sees refused
    connections); cut("blackhole"): keep accepting but forward nothing either way (requests hang
    until the pgpilot's own timeout); restore(): forward again."""

    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = "forward"
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.conns = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name=f"proxy:{self.port}")

    def start(self):
        self.thread.start()
        self._call(self._listen())
        return self

    def _call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _listen(self):
        if self.server is None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                     reuse_address=True)

    async def _handle(self, reader, writer):
        self.conns.add(writer)
        up_w = None
        try:
            if self.mode == "forward":
                up_r, up_w = await asyncio.open_connection(*self.target)
                self.conns.add(up_w)
                await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
            else:
                while await reader.read(65536):
                    pass
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_w):
                if w is not None:
                    self.conns.discard(w)
                    with contextlib.suppress(Exception):
                        w.close()

    async def _pipe(self, r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                if self.mode != "forward":
                    continue  # blackhole: swallow, never answer
                w.write(data)
                await w.drain()
        finally:
            with contextlib.suppress(Exception):
                w.close()

    async def _cut(self, mode):
        self.mode = mode
        if mode == "stop":
            if self.server is not None:
                self.server.close()
                await self.server.wait_closed()
                self.server = None
            for w in list(self.conns):
                sock = w.get_extra_info("socket")
                with contextlib.suppress(Exception):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    b"\x01\x00\x00\x00\x00\x00\x00\x00")
                with contextlib.suppress(Exception):
                    w.transport.abort()
            self.conns.clear()

    def cut(self, mode="stop"):
        self._call(self._cut(mode))

    async def _restore(self):
        self.mode = "forward"
        await self._listen()

    def restore(self):
        self._call(self._restore())

    def stop(self):
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.cut("stop")
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


# ---------------------------------------------------------------------------------------------
# PostgreSQL nodes

BASE_CONF = """
# pgpilot HA integration tests
wal_level = replica
wal_log_hints = on
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
fsync = off
full_page_writes = on
wal_keep_size = 256MB
shared_buffers = 16MB
max_connections = 60
wal_receiver_status_interval = 1s
hot_standby_feedback = off
log_min_messages = warning
log_line_prefix = '%m [%p] '
password_encryption = 'md5'
# segments in <pg_data>/pg_dynshmem, not /dev/shm: a SIGKILLed server leaves them behind, and
# they go away with the temp dir
dynamic_shared_memory_type = mmap
include_if_exists = 'pgpilot_node.conf'
"""

HBA = f"""local all all trust
host all postgres 127.0.0.0/8 trust
host replication {REPL_USER} 127.0.0.0/8 md5
host all all 127.0.0.0/8 md5
"""

_template_lock = threading.Lock()
_template_dir = None


def template_datadir():
    """A prepared, cleanly stopped data dir (roles, database app, table writes), made once per
    process and copied for each cluster's first primary."""
    global _template_dir
    with _template_lock:
        if _template_dir and os.path.isdir(_template_dir):
            return _template_dir
        base = tempfile.mkdtemp(prefix="pgpilot-ha-template-", dir=TMP_ROOT)
        atexit.register(shutil.rmtree, base, True)
        os.chmod(base, 0o755)
        chown_tree(base)
        data = os.path.join(base, "data")
        run_pg([f"{PG_BIN}/initdb", "-D", data, "-U", "postgres", "-N", "-A", "trust", "-E",
                "UTF8", "--locale=C"])
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write(BASE_CONF)
        with open(os.path.join(data, "pg_hba.conf"), "w") as f:
            f.write(HBA)
        port = free_port()
        with open(os.path.join(data, "pgpilot_node.conf"), "w") as f:
            f.write(f"listen_addresses = ''\nport = {port}\nunix_socket_directories = '{base}'\n")
        chown_tree(base)
        run_pg([f"{PG_BIN}/pg_ctl", "-D", data, "-l", os.path.join(base, "pg.log"), "-w",
                "start"])
        try:
            def sql(q, db="postgres"):
                run_pg([f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", base, "-p",
                        str(port), "-U", "postgres", "-d", db, "-c", q])
            sql(f"CREATE ROLE {REPL_USER} LOGIN REPLICATION PASSWORD '{REPL_PASSWORD}'")
            sql(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
            sql(f"CREATE DATABASE {APP_DB} OWNER {APP_USER}")
            sql(f"ALTER SCHEMA public OWNER TO {APP_USER}", APP_DB)
            sql("CREATE TABLE writes (id bigserial PRIMARY KEY, writer text NOT NULL, "
                "seq bigint NOT NULL, node int, addr text, ts timestamptz DEFAULT "
                f"clock_timestamp(), pad text); ALTER TABLE writes OWNER TO {APP_USER}", APP_DB)
        finally:
            run_pg([f"{PG_BIN}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"])
        os.remove(os.path.join(data, "pgpilot_node.conf"))
        _template_dir = data
        return data


class PgNode:
    """One PostgreSQL 15 node: data dir <base>/data owned by postgres, listening on host:port
    (its own loopback address) and a unix socket in <base>."""

    def __init__(self, base, host, port=None):
        self.base = base
        os.makedirs(base, exist_ok=True)
        self.datadir = os.path.join(base, "data")
        self.host = host
        self.port = port or free_port(host)
        self.log_path = os.path.join(base, "postgres.log")

    def write_node_conf(self, name):
        with open(os.path.join(self.datadir, "pgpilot_node.conf"), "w") as f:
            f.write(f"listen_addresses = '{self.host}'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.base}'\ncluster_name = '{name}'\n")
        chown_tree(self.base)

    def init_from_template(self, name):
        shutil.copytree(template_datadir(), self.datadir, symlinks=True)
        os.chmod(self.datadir, 0o700)
        self.write_node_conf(name)

    def basebackup_from(self, primary, name):
        chown_tree(self.base)
        run_pg([f"{PG_BIN}/pg_basebackup", "-h", primary.host, "-p", str(primary.port), "-U",
                REPL_USER, "-D", self.datadir, "-R", "-c", "fast", "-X", "stream", "--no-sync"],
               env=dict(os.environ, PGPASSWORD=REPL_PASSWORD))
        self.write_node_conf(name)

    def pg_ctl_start(self, timeout=30):
        run_pg([f"{PG_BIN}/pg_ctl", "-D", self.datadir, "-l", self.log_path, "-w", "-t",
                str(timeout), "start"], timeout=timeout + 10)
        pid = self.postmaster_pid()
        if pid:
            _register(pid, f"postgres {self.host}:{self.port}")

    def postmaster_pid(self):
        """The PID in postmaster.pid if that process is alive, else None."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid):
            _register(pid, f"postgres {self.host}:{self.port}")
            return pid
        return None

    def kill9(self):
        """SIGKILL the postmaster and all its children at once (a crash of the server);
        returns the postmaster PID killed (None if it was not running)."""
        pid = self.postmaster_pid()
        if pid is None:
            return None
        kids = proc_children(pid)
        kill_pids([pid] + kids, signal.SIGKILL)
        return pid

    def stop(self, timeout=15):
        """Fast shutdown by PID (SIGINT), SIGKILL of the postmaster and children if it
        overstays. Children stopped with SIGSTOP by a test get SIGCONT first."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        kids = proc_children(pid)
        kill_pids(kids, signal.SIGCONT)
        kill_pids([pid], signal.SIGINT)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            kill_pids([pid] + proc_children(pid), signal.SIGKILL)
        for k in kids:
            deadline = time.monotonic() + 5
            while pid_alive(k) and time.monotonic() < deadline:
                time.sleep(0.05)

    def connect(self, dbname="postgres", user="postgres", **kw):
        kw.setdefault("autocommit", True)
        kw.setdefault("connect_timeout", 3)
        if user == APP_USER:
            kw.setdefault("password", APP_PASSWORD)
        return psycopg.connect(host=self.host, port=self.port, user=user, dbname=dbname,
                               sslmode="disable", **kw)

    def query(self, sql, params=None, dbname="postgres", timeout=3):
        """Run one statement as postgres directly on the node; all rows."""
        with self.connect(dbname=dbname, connect_timeout=timeout) as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def in_recovery(self):
        """True/False, or None when the node does not answer."""
        try:
            return self.query("SELECT pg_is_in_recovery()", timeout=1)[0][0]
        except psycopg.Error:
            return None

    def wal_receiver(self):
        """(status, sender_host, sender_port) of the WAL receiver, or None."""
        try:
            rows = self.query("SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver",
                              timeout=1)
        except psycopg.Error:
            return None
        return rows[0] if rows else None


# ---------------------------------------------------------------------------------------------
# pgpilot


class Pilot:
    """One pgpilot process (ha_mode agent by default) in <base>, run as postgres when we are
    root so that its pg_ctl runs as the data dir owner."""

    def __init__(self, base, member, node, etcd_url, pg_rto=10, pg_rpo=1048576, mode="agent",
                 dns=None, databases=None, cluster_extra=None, settings=None):
        self.base = base
        os.makedirs(base, exist_ok=True)
        self.member = member
        self.node = node
        self.etcd_url = etcd_url
        self.pg_rto = pg_rto
        self.pg_rpo = pg_rpo
        self.mode = mode
        self.dns = dns
        self.databases = databases
        self.cluster_extra = dict(cluster_extra or {})
        self.settings = dict(settings or {})
        self.port = free_port()
        self.ini_path = os.path.join(base, "pgpilot.ini")
        self.log_path = os.path.join(base, "pgpilot.log")
        self.proc = None

    def render(self):
        s = {"listen_addr": "127.0.0.1", "listen_port": self.port, "unix_socket_dir": "",
             "auth_type": "md5", "auth_file": os.path.join(self.base, "userlist.txt"),
             "admin_users": ADMIN_USER, "pool_mode": "transaction", "ha_mode": self.mode,
             "default_pool_size": 10, "log_connections": 0, "log_disconnections": 0,
             "stats_period": 60}
        s.update(self.settings)
        c = {"name": CLUSTER_NAME, "namespace": NAMESPACE, "etcd_endpoints": self.etcd_url,
             "pg_rto": self.pg_rto, "pg_rpo": self.pg_rpo, "pg_bin": PG_BIN,
             "replication_conn": f"user={REPL_USER} password={REPL_PASSWORD}"}
        if self.mode == "agent":
            c.update({"member": self.member,
                      "pg_conn": f"host={self.node.host} port={self.node.port} user=postgres "
                                 "dbname=postgres",
                      "pg_data": self.node.datadir})
        else:
            c["pg_conn"] = "user=postgres dbname=postgres"
        c.update(self.cluster_extra)
        dbs = self.databases or {
            "app": f"cluster={CLUSTER_NAME} role=primary dbname={APP_DB}",
            "app_ro": f"cluster={CLUSTER_NAME} role=replica dbname={APP_DB}",
        }
        lines = ["[pgpilot]"] + [f"{k} = {v}" for k, v in s.items()]
        lines += ["", "[cluster]"] + [f"{k} = {v}" for k, v in c.items() if v is not None]
        lines += ["", "[databases]"] + [f"{k} = {v}" for k, v in dbs.items()]
        if self.dns:
            lines += ["", "[dns]"] + [f"{k} = {v}" for k, v in self.dns.items()]
        return "\n".join(lines) + "\n"

    def write_files(self):
        if self.dns and self.dns.get("tsig_key_file") and \
                os.path.dirname(self.dns["tsig_key_file"]) != self.base:
            key = os.path.join(self.base, "tsig.key")
            shutil.copyfile(self.dns["tsig_key_file"], key)
            self.dns = dict(self.dns, tsig_key_file=key)
        with open(self.ini_path, "w") as f:
            f.write(self.render())
        with open(os.path.join(self.base, "userlist.txt"), "w") as f:
            f.write(f'"{APP_USER}" "{APP_PASSWORD}"\n"{ADMIN_USER}" "{ADMIN_PASSWORD}"\n')
        chown_tree(self.base)

    def start(self, wait=True, timeout=20):
        self.write_files()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([PGPILOT_BIN, self.ini_path], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.base,
                                         start_new_session=True, **_as_postgres())
        finally:
            log.close()
        _register(self.proc.pid, f"pgpilot {self.member}")
        if wait:
            def ready():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"pgpilot {self.member} exited with {self.proc.returncode}"
                                       f":\n{tail(self.log_path)}")
                with contextlib.suppress(OSError):
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return True
                return False
            deadline = time.monotonic() + timeout
            while not ready():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgpilot {self.member} not listening:\n"
                                       f"{tail(self.log_path)}")
                time.sleep(0.05)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(5)

    def stop(self, timeout=10):
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    @property
    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        return self.log.encode()[offset:].decode(errors="replace")

    # -- clients
    def connect(self, dbname="app", user=APP_USER, password=APP_PASSWORD, **kw):
        kw.setdefault("autocommit", True)
        kw.setdefault("connect_timeout", 5)
        return psycopg.connect(host="127.0.0.1", port=self.port, user=user, password=password,
                               dbname=dbname, sslmode="disable", **kw)

    def admin(self, sql, timeout=5):
        """(columns, rows) of one admin console command; columns None and rows = status for a
        command without a result."""
        with self.connect(dbname="pgpilot", user=ADMIN_USER, password=ADMIN_PASSWORD,
                          connect_timeout=timeout) as c:
            cur = c.execute(sql)
            if cur.description is None:
                return None, cur.statusmessage
            return [d.name for d in cur.description], cur.fetchall()

    def admin_dicts(self, sql):
        cols, rows = self.admin(sql)
        return [dict(zip(cols, r)) for r in rows]

    def show_cluster(self):
        return self.admin_dicts("SHOW CLUSTER")

    def show_ha(self):
        """SHOW HA as {key: value}."""
        cols, rows = self.admin("SHOW HA")
        return {str(r[0]): r[1] for r in rows}

    def leader(self):
        """The member SHOW CLUSTER reports as primary/leader, or None."""
        for r in self.show_cluster():
            if str(r.get("role", "")).lower() in ("primary", "leader", "master"):
                return r["name"]
        return None


# ---------------------------------------------------------------------------------------------
# the cluster

NODE_HOSTS = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15"]


class HaCluster:
    """etcd + N PostgreSQL nodes + one pgpilot per node. Member i (1-based) is pg-test-i on
    NODE_HOSTS[i-1]; member 1 starts as the primary.

    proxies=True puts a TcpProxy between each pgpilot and etcd; dns is the [dns] section given
    to every pgpilot; pilot_settings / cluster_extra are added to each pgpilot's [pgpilot] and
    [cluster] sections. start_pilots=False leaves the agents to the caller."""

    def __init__(self, n=3, pg_rto=10, pg_rpo=1048576, proxies=False, dns=None,
                 pilot_settings=None, cluster_extra=None, base=None):
        self.base = base or tempfile.mkdtemp(prefix="pgpilot-ha-", dir=TMP_ROOT)
        os.chmod(self.base, 0o755)
        self.n = n
        self.pg_rto = pg_rto
        self.pg_rpo = pg_rpo
        self.etcd = Etcd(self.base)
        self.nodes = {}
        self.pilots = {}
        self.proxies = {}
        self.use_proxies = proxies
        self.dns = dns
        self.pilot_settings = pilot_settings
        self.cluster_extra = cluster_extra
        self.members = [f"{CLUSTER_NAME}-{i}" for i in range(1, n + 1)]
        self.started_at = None

    # -- lifecycle
    def start(self, start_pilots=True, timeout=None):
        t0 = time.monotonic()
        self.etcd.start()
        for i, m in enumerate(self.members):
            self.nodes[m] = PgNode(os.path.join(self.base, m), NODE_HOSTS[i])
        first = self.nodes[self.members[0]]
        first.init_from_template(self.members[0])
        first.pg_ctl_start()
        for m in self.members[1:]:
            self.nodes[m].basebackup_from(first, m)
            self.nodes[m].pg_ctl_start()
        for m in self.members[1:]:
            wait_for(lambda m=m: (self.nodes[m].wal_receiver() or ("",))[0] == "streaming", 30,
                     0.1, f"{m} to stream from {self.members[0]}")
        for m in self.members:
            url = self.etcd.url
            if self.use_proxies:
                self.proxies[m] = TcpProxy(self.etcd.client_port).start()
                url = f"http://127.0.0.1:{self.proxies[m].port}"
            self.pilots[m] = Pilot(os.path.join(self.base, m + "-pilot"), m, self.nodes[m], url,
                                   self.pg_rto, self.pg_rpo, dns=self.dns,
                                   settings=self.pilot_settings, cluster_extra=self.cluster_extra)
        if start_pilots:
            self.start_pilots(timeout=timeout)
        self.started_at = time.monotonic() - t0
        return self

    def start_pilots(self, timeout=None):
        """Start member 1's agent first and wait until it holds the leader key (a bootstrap
        has one candidate), then the others, and wait until every member is listed."""
        timeout = timeout or max(30, 3 * self.pg_rto)
        first = self.members[0]
        self.pilots[first].start()
        wait_for(lambda: self.etcd_leader() == first, timeout, 0.1,
                 f"{first} to take the leader key (log:\n{self.pilots[first].log[-3000:]})")
        for m in self.members[1:]:
            self.pilots[m].start()
        self.wait_members_listed(timeout)

    def wait_members_listed(self, timeout=30):
        want = set(self.members)
        wait_for(lambda: want <= set(self.etcd_members()), timeout, 0.1,
                 "every member key in etcd")

    def destroy(self, keep=KEEP_TMP):
        for p in self.pilots.values():
            with contextlib.suppress(Exception):
                p.stop()
        for n in self.nodes.values():
            with contextlib.suppress(Exception):
                n.stop()
        for px in self.proxies.values():
            with contextlib.suppress(Exception):
                px.stop()
        with contextlib.suppress(Exception):
            self.etcd.stop()
        left = [(m, p.proc.pid) for m, p in self.pilots.items() if p.running()]
        left += [(m, n.postmaster_pid()) for m, n in self.nodes.items() if n.postmaster_pid()]
        if not keep:
            shutil.rmtree(self.base, ignore_errors=True)
        return left

    # -- views
    def etcd_leader(self):
        try:
            return self.etcd.get(f"{NAMESPACE}/{CLUSTER_NAME}/leader")
        except (OSError, ValueError):
            return None

    def etcd_members(self):
        try:
            keys = self.etcd.get_prefix(f"{NAMESPACE}/{CLUSTER_NAME}/members/")
        except (OSError, ValueError):
            return {}
        return {k.rsplit("/", 1)[1]: v for k, v in keys.items()}

    def live_pilots(self, exclude=()):
        return [m for m in self.members if m not in exclude and self.pilots[m].running()]

    def pg_primaries(self, exclude=()):
        """Members whose PostgreSQL answers and is not in recovery (ground truth)."""
        return [m for m in self.members if m not in exclude
                and self.nodes[m].in_recovery() is False]

    def pg_primary(self):
        p = self.pg_primaries()
        return p[0] if len(p) == 1 else None

    def shown_leader(self, via=None):
        """The leader SHOW CLUSTER reports on pgpilot <via> (default: any live one)."""
        for m in ([via] if via else self.live_pilots()):
            with contextlib.suppress(Exception):
                return self.pilots[m].leader()
        return None

    def wait_new_primary(self, old, timeout, interval=0.05):
        """Wait until a member other than <old> runs PostgreSQL out of recovery and holds the
        leader key; returns (member, seconds waited)."""
        t0 = time.monotonic()

        def check():
            leader = self.etcd_leader()
            if leader and leader != old and self.nodes[leader].in_recovery() is False:
                return leader
            return None
        m = wait_for(check, timeout, interval, f"a new primary other than {old}")
        return m, time.monotonic() - t0

    # -- faults
    def kill_node(self, member):
        """SIGKILL the member's pgpilot and its PostgreSQL (postmaster + children) together."""
        pg_pid = self.nodes[member].postmaster_pid()
        kids = proc_children(pg_pid) if pg_pid else []
        pilot = self.pilots[member]
        pids = ([pilot.proc.pid] if pilot.running() else []) + ([pg_pid] if pg_pid else []) + kids
        kill_pids(pids, signal.SIGKILL)
        if pilot.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                pilot.proc.wait(5)
        return time.monotonic()

    def kill_pg(self, member):
        self.nodes[member].kill9()
        return time.monotonic()

    def logs(self, members=None, limit=6000):
        """The tail of each pgpilot's log, for assertion messages."""
        out = []
        for m in members or self.members:
            out.append(f"----- {m} pgpilot log -----\n{self.pilots[m].log[-limit:]}")
        return "\n".join(out)

    def pg_logs(self, members=None, limit=3000):
        """Tails of each node's PostgreSQL logs: ours (first start) and the agent's
        (<pg_data>/pgpilot-postgres.log, every start by pg_ctl from pgpilot)."""
        out = []
        for m in members or self.members:
            out.append(f"----- {m} postgres log -----\n{tail(self.nodes[m].log_path, 30)[-limit:]}")
            agent_log = os.path.join(self.nodes[m].datadir, "pgpilot-postgres.log")
            if os.path.exists(agent_log):
                out.append(f"----- {m} postgres log (started by pgpilot) -----\n"
                           f"{tail(agent_log, 30)[-limit:]}")
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# a writer


class Writer(threading.Thread):
    """One client connection through a pgpilot (database app) inserting a row every <interval>
    seconds. Records each acknowledged commit (seq, sent, acked, node port, node address, server
    clock), each error (sent, at, SQLSTATE, message) and each time the connection was lost and
    re-opened (reconnect=True) or the writer stopped (reconnect=False).

    prepare: psycopg's automatic server-side prepared statements (named, after 5 executions)
    are off by default (unnamed statements only); prepare=True prepares from the first
    execution, to test that named statements survive a change of server."""

    INSERT = ("INSERT INTO writes (writer, seq, node, addr, pad) VALUES (%s, %s, "
              "inet_server_port(), host(inet_server_addr()), %s) "
              "RETURNING inet_server_port(), host(inet_server_addr()), "
              "extract(epoch from clock_timestamp())::float8")

    def __init__(self, pilot, name, interval=0.02, reconnect=False, pad=0, prepare=False):
        super().__init__(daemon=True, name=f"writer:{name}")
        self.prepare_threshold = 0 if prepare else None
        self.pilot = pilot
        self.wname = name
        self.interval = interval
        self.reconnect = reconnect
        self.pad = "x" * pad
        self.acks = []      # (seq, sent, acked, node_port, node_addr, server_epoch)
        self.errors = []    # (sent, at, sqlstate, message)
        self.reconnects = 0
        self.lost_connection = None
        self.stopping = threading.Event()
        self.conn = None
        self.seq = 0

    def run(self):
        try:
            self.conn = self.pilot.connect(prepare_threshold=self.prepare_threshold)
        except psycopg.Error as e:
            self.lost_connection = f"could not connect: {e}"
            return
        while not self.stopping.is_set():
            self.seq += 1
            sent = time.time()
            try:
                row = self.conn.execute(self.INSERT, (self.wname, self.seq, self.pad)).fetchone()
                self.acks.append((self.seq, sent, time.time(), row[0], row[1], row[2]))
            except Exception as e:  # noqa: BLE001 - a driver-level surprise is a failure too
                self.errors.append((sent, time.time(), getattr(e, "sqlstate", None),
                                    f"{type(e).__name__}: {e}"))
                if not isinstance(e, psycopg.Error):
                    # psycopg itself choked on the reply stream: the pooler broke the protocol
                    self.lost_connection = f"protocol error: {type(e).__name__}: {e}"
                    return
                if self.conn.closed or self.conn.broken:
                    if not self.reconnect or self.stopping.is_set():
                        self.lost_connection = str(e)
                        return
                    self.reconnects += 1
                    while not self.stopping.is_set():
                        try:
                            self.conn = self.pilot.connect(
                                prepare_threshold=self.prepare_threshold)
                            break
                        except psycopg.Error:
                            time.sleep(0.1)
                else:
                    time.sleep(self.interval)
                continue
            wait = self.interval - (time.time() - sent)
            if wait > 0:
                self.stopping.wait(wait)

    def stop(self, timeout=30):
        self.stopping.set()
        self.join(timeout)
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()

    def acked_keys(self):
        return {(self.wname, a[0]) for a in self.acks}

    def first_ack_after(self, t):
        for a in self.acks:
            if a[2] > t:
                return a
        return None


def rows_present(node, writer_names):
    """{(writer, seq)} present in table writes on <node> for those writers."""
    rows = node.query("SELECT writer, seq FROM writes WHERE writer = ANY(%s)", (list(writer_names),),
                      dbname=APP_DB, timeout=5)
    return {(w, s) for w, s in rows}


def wal_bytes(node):
    """pg_current_wal_lsn() of a primary, as an integer."""
    lsn = node.query("SELECT pg_current_wal_lsn()::text")[0][0]
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_int(text):
    if not text:
        return None
    m = re.match(r"^([0-9A-Fa-f]+)/([0-9A-Fa-f]+)$", str(text))
    if not m:
        return None
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


# ---------------------------------------------------------------------------------------------
# timings and pytest glue

# doc/ha.md section 2.4, milliseconds: the derived set for a pg_rto (used for bounds when SHOW HA
# does not give them).
DOC_TIMINGS = {
    5: dict(L=3000, R=500, T=1000, F=500, P=500, X=1000, S=1000),
    10: dict(L=7000, R=875, T=3062, F=1500, P=666, X=1834, S=2333),
    30: dict(L=24000, R=3000, T=10500, F=5000, P=2000, X=3500, S=8000),
}


def timings(pg_rto):
    """The derived timings (seconds) for pg_rto, from doc/ha.md."""
    return {k: v / 1000.0 for k, v in DOC_TIMINGS[pg_rto].items()}


def request_failed(request):
    node = request.node
    return any(getattr(node, "rep_" + w, None) is not None and getattr(node, "rep_" + w).failed
               for w in ("setup", "call"))


def cluster_fixture(request, **kw):
    """Generator for a pytest fixture: an HaCluster(**kw), started; at teardown the pgpilot logs
    (and PostgreSQL log tails) go to stderr when the test failed, everything is stopped by PID
    and the fixture fails if a process of ours is left."""
    c = HaCluster(**kw)
    try:
        c.start()
    except BaseException:
        sys.stderr.write(c.logs() + "\n" + c.pg_logs() + "\n")
        c.destroy()
        raise
    yield c
    if request_failed(request):
        sys.stderr.write("\n" + c.logs(limit=20000) + "\n" + c.pg_logs() + "\n")
    left = c.destroy()
    assert not left, f"processes left running: {left}"


def text_of(rows):
    """SHOW output (list of dicts or a dict) flattened to one lowercase string for searching."""
    if isinstance(rows, dict):
        return " ".join(f"{k}={v}" for k, v in rows.items()).lower()
    return " | ".join(" ".join(f"{k}={v}" for k, v in r.items()) for r in rows).lower()
