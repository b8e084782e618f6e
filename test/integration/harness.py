"""Integration harness for the pgpilot pooler (and PgBouncer, to validate the tests).

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

What lives here: a throw-away PostgreSQL 15 cluster (PgCluster), a pooler process built from an
ini file (Pooler: pgpilot or PgBouncer, chosen by the POOLER environment variable), a raw
wire-protocol client for the tests that must send bytes no driver would (RawClient), and a
registry of every process started so that the session can prove none was left behind.

Processes run as the `postgres` user (PostgreSQL refuses root; PgBouncer too). They are started
directly with subprocess' user=, so the PID we hold is the PID of the program itself and signals
reach it. Everything is stopped by PID, never by name.
"""

import contextlib
import hashlib
import base64
import hmac
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import psycopg

PG_BINDIR = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
POOLER = os.environ.get("POOLER", "pgpilot")
PGPILOT_BIN = os.environ.get("PGPILOT_BIN", os.path.join(REPO, "pgpilot"))
PGBOUNCER_BIN = os.environ.get("PGBOUNCER_BIN", "/usr/sbin/pgbouncer")
KEEP_TMP = os.environ.get("KEEP_TMP", "") not in ("", "0")
RUN_USER = "postgres"

# Users created in PostgreSQL and listed (with plain passwords) in the pooler's auth_file.
PASSWORDS = {
    "md5user": "md5pass",  # stored as md5 in pg_authid, pg_hba asks md5
    "scramuser": "scrampass",  # stored as SCRAM in pg_authid, pg_hba asks scram-sha-256
    "pgadmin": "adminpass",  # pooler admin_users entry (no PostgreSQL role)
    "pgstats": "statspass",  # pooler stats_users entry (no PostgreSQL role)
    "postgres": "pgpass",  # superuser, trust in pg_hba
}


def is_pgpilot():
    return POOLER == "pgpilot"


def sqlstate(pgpilot_code):
    """The SQLSTATE expected from the pooler under test: pgpilot uses the specific code from its
    contract; PgBouncer 1.18 reports every pooler-generated error as 08P01."""
    return pgpilot_code if is_pgpilot() else "08P01"


# ---------------------------------------------------------------------------------------------
# processes


class ProcessRegistry:
    """Every PID the harness starts, so that the session can check that all of them are gone."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pids = {}  # pid -> description

    def add(self, pid, what):
        with self.lock:
            self.pids[pid] = what

    def alive(self):
        """PIDs started by us that still exist (zombies of our own children count as gone)."""
        out = []
        with self.lock:
            items = list(self.pids.items())
        for pid, what in items:
            if pid_alive(pid):
                out.append((pid, what))
        return out


REGISTRY = ProcessRegistry()


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_pid_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def run_as_postgres(argv, check=True, timeout=120, env=None, **kw):
    """Run a short command as the postgres user and return the CompletedProcess."""
    p = subprocess.run(argv, user=RUN_USER, group=RUN_USER, extra_groups=[], env=env,
                       capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{argv} failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p


def spawn_as_postgres(argv, what, log_path, env=None, cwd=None):
    """Start a long-running program as postgres, stdout+stderr appended to log_path."""
    log = open(log_path, "ab")
    try:
        p = subprocess.Popen(argv, user=RUN_USER, group=RUN_USER, extra_groups=[],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=env, cwd=cwd, start_new_session=True)
    finally:
        log.close()
    REGISTRY.add(p.pid, what)
    return p


def make_tmpdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    pw = pwd.getpwnam(RUN_USER)
    os.chown(d, pw.pw_uid, pw.pw_gid)
    os.chmod(d, 0o755)
    return d


def chown_tree(path):
    pw = pwd.getpwnam(RUN_USER)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for n in files:
            os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)


_port_lock = threading.Lock()
_ports_given = set()


def free_port():
    """A free TCP port on 127.0.0.1. The kernel picks it; we avoid handing out the same one twice
    in this process. Two xdist workers may race, but the kernel's ephemeral choice makes it rare."""
    with _port_lock:
        for _ in range(50):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise RuntimeError("no free port")


def port_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def rss_kib(pid):
    """Resident set size of a process in KiB (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid):
    """User + system CPU time a process has used so far, in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# What a sanitizer writes when it finds something (ASan, LSan, UBSan).
SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")


def sanitizer_report(text):
    """The first sanitizer report line in a log text, or None."""
    m = SANITIZER_REPORT.search(text)
    if not m:
        return None
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    return text[start:end if end >= 0 else len(text)]


def wait_until(pred, timeout, interval=0.1, what="condition"):
    """Poll pred() until it returns a true value; return that value or raise AssertionError."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# secrets


def md5_secret(user, password):
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def scram_secret(password, salt=None, iterations=4096):
    """A SCRAM-SHA-256 verifier as PostgreSQL stores it (RFC 5802/7677)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# ---------------------------------------------------------------------------------------------
# PostgreSQL


class PgCluster:
    """A PostgreSQL 15 cluster in a temp dir, listening on 127.0.0.1:port and a private socket dir.

    Roles: postgres (superuser, trust), md5user (md5 secret, md5 in pg_hba), scramuser (SCRAM
    secret, scram-sha-256 in pg_hba). Databases: appdb (owner md5user, table items), benchdb
    (owner md5user, pgbench scale 1)."""

    def __init__(self, base=None, port=None):
        self.base = base or make_tmpdir("pgpilot-it-pg-")
        self.datadir = os.path.join(self.base, "data")
        self.sockdir = self.base
        self.logfile = os.path.join(self.base, "postgres.log")
        self.port = port or free_port()
        self.proc = None

    # -- lifecycle
    def initdb(self):
        run_as_postgres([f"{PG_BINDIR}/initdb", "-D", self.datadir, "-U", "postgres", "-N",
                         "-A", "trust", "-E", "UTF8", "--locale=C"])
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# pgpilot integration tests\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "shared_buffers = 16MB\nmax_connections = 150\n"
                    "wal_level = minimal\nmax_wal_senders = 0\n"
                    "password_encryption = 'scram-sha-256'\n"
                    "log_min_messages = warning\nlog_connections = off\n"
                    "unix_socket_permissions = 0777\n")
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write("local all postgres trust\n"
                    "local all all trust\n"
                    "host all postgres 127.0.0.1/32 trust\n"
                    "host all md5user 127.0.0.1/32 md5\n"
                    "host all scramuser 127.0.0.1/32 scram-sha-256\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n")

    def start(self):
        argv = [f"{PG_BINDIR}/postgres", "-D", self.datadir, "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sockdir}"]
        self.proc = spawn_as_postgres(argv, f"postgres :{self.port}", self.logfile)
        wait_until(lambda: self._ready() or self._died(), 30, what="postgres to start")
        if self._died():
            raise RuntimeError(f"postgres exited at start:\n{self.log_text()}")

    def _died(self):
        return self.proc.poll() is not None

    def _ready(self):
        try:
            with self.connect_super(connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self):
        """Fast shutdown by our own PID (SIGINT = PostgreSQL fast shutdown), then wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def destroy(self):
        self.stop()
        if not KEEP_TMP:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_text(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- content
    def setup_content(self, bench=True):
        with self.connect_super() as c:
            c.execute("SET password_encryption = 'md5'")
            c.execute("CREATE ROLE md5user LOGIN PASSWORD 'md5pass'")
            c.execute("SET password_encryption = 'scram-sha-256'")
            c.execute("CREATE ROLE scramuser LOGIN PASSWORD 'scrampass'")
            c.execute("CREATE DATABASE appdb OWNER md5user")
            if bench:
                c.execute("CREATE DATABASE benchdb OWNER md5user")
        with self.connect_super(dbname="appdb") as c:
            c.execute("ALTER SCHEMA public OWNER TO md5user")
            c.execute("GRANT ALL ON SCHEMA public TO PUBLIC")
            c.execute("CREATE TABLE items (id int PRIMARY KEY, val text)")
            c.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g")
            c.execute("ALTER TABLE items OWNER TO md5user")
            c.execute("GRANT ALL ON items TO PUBLIC")
        if not bench:
            return
        env = dict(os.environ, PGPASSWORD="md5pass")
        p = subprocess.run([f"{PG_BINDIR}/pgbench", "-i", "-s", "1", "-q", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", "md5user", "benchdb"],
                           env=env, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"pgbench -i failed: {p.stdout}{p.stderr}")
        with self.connect_super(dbname="benchdb") as c:
            c.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC")

    def create_table(self, name, columns="id int, val text", dbname="appdb"):
        """A fresh table owned by md5user (dropped first if it exists)."""
        with self.connect_super(dbname=dbname) as c:
            c.execute(f"DROP TABLE IF EXISTS {name}")
            c.execute(f"CREATE TABLE {name} ({columns})")
            c.execute(f"ALTER TABLE {name} OWNER TO md5user")
            c.execute(f"GRANT ALL ON {name} TO PUBLIC")

    def scram_verifier(self, role):
        with self.connect_super() as c:
            return c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                             (role,)).fetchone()[0]

    # -- access
    def connect_super(self, dbname="postgres", **kw):
        """Superuser connection through the unix socket (trust), autocommit."""
        kw.setdefault("connect_timeout", 10)
        return psycopg.connect(host=self.sockdir, port=self.port, user="postgres", dbname=dbname,
                               autocommit=True, **kw)

    def query(self, sql, params=None, dbname="postgres"):
        with self.connect_super(dbname=dbname) as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def backends(self, user=None, dbname=None):
        """Client backends (pid, usename, datname, state, application_name) other than ours."""
        sql = ("SELECT pid, usename, datname, state, application_name FROM pg_stat_activity "
               "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        args = []
        if user:
            sql += " AND usename = %s"
            args.append(user)
        if dbname:
            sql += " AND datname = %s"
            args.append(dbname)
        return self.query(sql, args)

    def terminate(self, pid):
        return self.query("SELECT pg_terminate_backend(%s)", (pid,))[0][0]


def make_cluster(port=None, bench=True, start=True):
    """initdb + roles + databases (+ pgbench data in benchdb when bench), left running unless
    start is False (then it is stopped after the setup)."""
    pg = PgCluster(port=port)
    pg.initdb()
    pg.start()
    pg.setup_content(bench=bench)
    if not start:
        pg.stop()
    return pg


# ---------------------------------------------------------------------------------------------
# pooler


def admin_dbname():
    return "pgpilot" if is_pgpilot() else "pgbouncer"


def immediate_signal():
    """pgpilot: SIGQUIT (TERM waits for clients to leave, INT for servers to be released);
    PgBouncer 1.18: SIGTERM is its immediate shutdown."""
    return signal.SIGQUIT if is_pgpilot() else signal.SIGTERM


def pooler_binary():
    return PGPILOT_BIN if is_pgpilot() else PGBOUNCER_BIN


class Pooler:
    """One pooler process (pgpilot or PgBouncer) built from settings.

    settings: dict of [pgpilot] options overriding the defaults below.
    databases: dict name -> connection string ('{pgport}' is replaced by the PostgreSQL port);
        default: appdb and benchdb on the cluster.
    users: dict name -> "pool_mode=..." for the [users] section.
    userlist: dict user -> secret (default: plain PASSWORDS).
    """

    def __init__(self, pg_port, settings=None, databases=None, users=None, userlist=None,
                 section=None, extra=""):
        self.kind = POOLER
        self.dir = make_tmpdir("pgpilot-it-pooler-")
        self.pg_port = pg_port
        self.port = free_port()
        self.section = section or ("pgpilot" if is_pgpilot() else "pgbouncer")
        self.ini_path = os.path.join(self.dir, "pooler.ini")
        self.userlist_path = os.path.join(self.dir, "userlist.txt")
        self.log_path = os.path.join(self.dir, "pooler.log")
        self.pidfile = os.path.join(self.dir, "pooler.pid")
        self.admin_db = admin_dbname()
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": self.dir,
            "auth_type": "md5",
            "auth_file": self.userlist_path,
            "admin_users": "pgadmin",
            "stats_users": "pgstats",
            "pool_mode": "transaction",
            "default_pool_size": "10",
            "max_client_conn": "200",
            "server_login_retry": "1",
            "query_wait_timeout": "30",  # a test that hangs fails in 30 s, not 120
            "log_connections": "1",
            "log_disconnections": "1",
        }
        self.settings.update(settings or {})
        self.databases = databases if databases is not None else {
            "appdb": "host=127.0.0.1 port={pgport} dbname=appdb",
            "benchdb": "host=127.0.0.1 port={pgport} dbname=benchdb",
        }
        self.users = users or {}
        self.userlist = userlist if userlist is not None else dict(PASSWORDS)
        self.extra = extra
        self.proc = None
        self.extra_pids = []  # a daemonized pooler's PID (not our child)
        self.write_userlist()
        self.write_ini()

    # -- files
    def render(self, settings=None, databases=None, users=None, extra=None):
        s = dict(self.settings)
        s.update(settings or {})
        dbs = self.databases if databases is None else databases
        us = self.users if users is None else users
        lines = [f"[{self.section}]"]
        lines += [f"{k} = {v}" for k, v in s.items() if v is not None]
        lines.append("")
        lines.append("[databases]")
        lines += [f"{k} = {v.format(pgport=self.pg_port)}" for k, v in dbs.items()]
        if us:
            lines.append("")
            lines.append("[users]")
            lines += [f"{k} = {v}" for k, v in us.items()]
        lines.append("")
        lines.append(self.extra if extra is None else extra)
        return "\n".join(lines) + "\n"

    def write_file(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        pw = pwd.getpwnam(RUN_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        return path

    def write_ini(self, text=None):
        self.write_file("pooler.ini", text if text is not None else self.render())

    def write_userlist(self, userlist=None):
        ul = self.userlist if userlist is None else userlist
        self.write_file("userlist.txt", "".join(f'"{u}" "{s}"\n' for u, s in ul.items()))

    # -- process
    def argv(self, *opts):
        return [pooler_binary(), *opts, self.ini_path]

    def start(self, *opts, wait=True):
        self.proc = spawn_as_postgres(self.argv(*opts), f"{self.kind} :{self.port}",
                                      self.log_path, cwd=self.dir)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=15):
        def ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log}")
            return port_accepts(self.port)
        wait_until(ready, timeout, what=f"{self.kind} to listen on {self.port}")

    def running(self):
        if self.proc is not None:
            return self.proc.poll() is None
        return any(pid_alive(p) for p in self.extra_pids)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=15):
        """Wait for the process to exit; return its exit code (raise on timeout)."""
        return self.proc.wait(timeout)

    def stop(self, sig=None, timeout=10):
        """Stop by PID: sig (default: the immediate-shutdown signal, see immediate_signal()),
        then SIGKILL after timeout. Returns the exit code."""
        sig = sig or immediate_signal()
        for pid in self.extra_pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
                if not wait_pid_gone(pid, timeout):
                    os.kill(pid, signal.SIGKILL)
                    wait_pid_gone(pid, 5)
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def destroy(self):
        self.stop(timeout=5)
        if not KEEP_TMP:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10, since=0):
        """Wait until the log (from byte offset since) matches the regex; return the match."""
        rx = re.compile(pattern, re.I)
        return wait_until(lambda: rx.search(self.log[since:]), timeout,
                          what=f"log line /{pattern}/")

    # -- clients
    def connect(self, dbname="appdb", user="md5user", password=None, **kw):
        """A psycopg connection through the pooler (autocommit unless told otherwise)."""
        if password is None:
            password = PASSWORDS.get(user)
        kw.setdefault("autocommit", True)
        kw.setdefault("connect_timeout", 10)
        kw.setdefault("sslmode", "disable")
        if password is not None and password is not False:
            kw["password"] = password
        return psycopg.connect(host="127.0.0.1", port=self.port, user=user, dbname=dbname, **kw)

    def admin_conn(self, user="pgadmin", dbname=None, **kw):
        return self.connect(dbname=dbname or self.admin_db, user=user, **kw)

    def admin(self, sql, user="pgadmin", dbname=None):
        """Run one admin console command; return (column names, rows). For commands without a
        result set, columns is None and rows is the command status string."""
        with self.admin_conn(user=user, dbname=dbname) as c:
            cur = c.execute(sql)
            if cur.description is None:
                return None, cur.statusmessage
            return [d.name for d in cur.description], cur.fetchall()

    def admin_dicts(self, sql, **kw):
        cols, rows = self.admin(sql, **kw)
        return [dict(zip(cols, r)) for r in rows]

    def pool(self, database="appdb", user="md5user"):
        for p in self.admin_dicts("SHOW POOLS"):
            if p["database"] == database and p["user"] == user:
                return p
        return None

    def reload(self, ini_text=None, via="admin"):
        """Write ini_text (if given) and reload by RELOAD (via='admin') or SIGHUP (via='hup')."""
        if ini_text is not None:
            self.write_ini(ini_text)
        if via == "admin":
            return self.admin("RELOAD")
        self.signal(signal.SIGHUP)
        return None


# ---------------------------------------------------------------------------------------------
# raw protocol client


class ServerError(Exception):
    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('C')}: {fields.get('M')}")

    @property
    def sqlstate(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M", "")


def startup_packet(params, version=196608):
    body = struct.pack("!i", version)
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def ssl_request():
    return struct.pack("!ii", 8, 80877103)


def message(tag, body=b""):
    return tag + struct.pack("!i", len(body) + 4) + body


def query_message(sql):
    return message(b"Q", sql.encode() + b"\0")


def parse_error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


class RawClient:
    """A minimal v3 protocol client on a plain socket: startup (trust, cleartext, md5),
    simple queries, and byte-level access for the bad-input tests."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.params = {}
        self.backend_key = None

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def abort(self):
        """Close with RST (SO_LINGER 0): a client that vanishes without Terminate."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read_byte(self):
        if not self._fill(1):
            return None
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def read_message(self):
        """(tag, body) or None at EOF."""
        if not self._fill(5):
            return None
        tag = self.buf[:1]
        (length,) = struct.unpack("!i", self.buf[1:5])
        if not self._fill(1 + length):
            return None
        body = self.buf[5:1 + length]
        self.buf = self.buf[1 + length:]
        return tag, body

    def read_until_eof(self):
        """All messages until the peer closes."""
        out = []
        while True:
            m = self.read_message()
            if m is None:
                return out
            out.append(m)

    def expect_error(self):
        """Read messages until an ErrorResponse; return its fields (AssertionError if EOF)."""
        while True:
            m = self.read_message()
            assert m is not None, "connection closed without an ErrorResponse"
            if m[0] == b"E":
                return parse_error_fields(m[1])

    def is_closed(self, timeout=5):
        """True if the peer closes within timeout (after any pending messages)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                m = self.read_message()
                if m is None:
                    return True
        except socket.timeout:
            return False

    def startup(self, user, database, password=None, **params):
        """Log in; raise ServerError on an ErrorResponse. Returns self."""
        p = {"user": user, "database": database}
        p.update(params)
        self.send(startup_packet(p))
        while True:
            m = self.read_message()
            if m is None:
                raise ConnectionError("closed during startup")
            tag, body = m
            if tag == b"E":
                raise ServerError(parse_error_fields(body))
            if tag == b"R":
                (code,) = struct.unpack("!i", body[:4])
                if code == 0:
                    continue
                if code == 3:
                    self.send(message(b"p", password.encode() + b"\0"))
                elif code == 5:
                    salt = body[4:8]
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + salt).hexdigest()
                    self.send(message(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 10:
                    self._scram(password, body[4:])
                elif code in (11, 12):
                    raise AssertionError(f"unexpected SASL message {code}")
                else:
                    raise NotImplementedError(f"auth code {code}")
            elif tag == b"S":
                k, v, _ = body.split(b"\0", 2)
                self.params[k.decode()] = v.decode()
            elif tag == b"K":
                self.backend_key = struct.unpack("!ii", body)
            elif tag == b"Z":
                return self

    def _scram(self, password, mechs, nonce=None):
        """SCRAM-SHA-256 exchange (RFC 5802 / 7677) without channel binding; <nonce> is the
        client nonce (random when None)."""
        assert b"SCRAM-SHA-256" in mechs.split(b"\0"), mechs
        nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = ("n,," + first_bare).encode()
        self.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
        tag, body = self._auth_reply()
        assert struct.unpack("!i", body[:4])[0] == 11, body
        server_first = body[4:].decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(nonce)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        final_bare = f"c=biws,r={attrs['r']}"
        auth_msg = f"{first_bare},{server_first},{final_bare}".encode()
        sig = hmac.new(stored_key, auth_msg, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        final = f"{final_bare},p={base64.b64encode(proof).decode()}".encode()
        self.send(message(b"p", final))
        tag, body = self._auth_reply()
        assert struct.unpack("!i", body[:4])[0] == 12, body
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        expect = base64.b64encode(hmac.new(server_key, auth_msg, "sha256").digest()).decode()
        assert body[4:].decode() == f"v={expect}", "bad SCRAM server signature"

    def _auth_reply(self):
        m = self.read_message()
        if m is None:
            raise ConnectionError("closed during authentication")
        if m[0] == b"E":
            raise ServerError(parse_error_fields(m[1]))
        assert m[0] == b"R", m
        return m

    def query(self, sql):
        """Simple query; returns list of rows (tuples of str/None) of the last result.
        Raises ServerError (after draining to ReadyForQuery) on error."""
        self.send(query_message(sql))
        return self.read_result()

    def read_result(self):
        rows, err = [], None
        while True:
            m = self.read_message()
            if m is None:
                if err:
                    raise ServerError(err)
                raise ConnectionError("closed during query")
            tag, body = m
            if tag == b"T":
                rows = []
            elif tag == b"D":
                (n,) = struct.unpack("!h", body[:2])
                pos, row = 2, []
                for _ in range(n):
                    (ln,) = struct.unpack("!i", body[pos:pos + 4])
                    pos += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(body[pos:pos + ln].decode())
                        pos += ln
                rows.append(tuple(row))
            elif tag == b"E":
                err = parse_error_fields(body)
            elif tag == b"Z":
                self.txn_status = body.decode()
                if err:
                    raise ServerError(err)
                return rows


# ---------------------------------------------------------------------------------------------
# pgbench


def pgbench(port, *args, user="md5user", dbname="benchdb", timeout=120):
    """Run pgbench against host 127.0.0.1:port; return (returncode, output)."""
    env = dict(os.environ, PGPASSWORD=PASSWORDS[user], PGSSLMODE="disable")
    p = subprocess.run([f"{PG_BINDIR}/pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", user,
                        *args, dbname], env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def pgbench_start(port, *args, user="md5user", dbname="benchdb", log_path=None):
    """Start pgbench in the background (registered for the leak check); returns the Popen whose
    stdout (text) holds the report."""
    env = dict(os.environ, PGPASSWORD=PASSWORDS[user], PGSSLMODE="disable")
    p = subprocess.Popen([f"{PG_BINDIR}/pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", user,
                          *args, dbname], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    REGISTRY.add(p.pid, "pgbench")
    return p


def pgbench_failed(output):
    """Number of failed transactions reported by pgbench 15 (None if the line is missing)."""
    m = re.search(r"number of failed transactions: (\d+)", output)
    return int(m.group(1)) if m else None


def pgbench_processed(output):
    m = re.search(r"number of transactions actually processed: (\d+)", output)
    return int(m.group(1)) if m else None
