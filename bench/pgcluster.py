# pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
#
# Throwaway local processes for bench/ and the demo: a PostgreSQL 15 node (initdb in a temp dir,
# run as the `postgres` user when we are root, because PostgreSQL refuses root) and a pooler
# (pgpilot or PgBouncer, same ini format) in front of it. A ProcessGroup owns every process it
# starts and stops them by PID, newest first, on normal exit, exceptions, Ctrl-C and SIGTERM.
# Standard library only, so it runs with Debian's /usr/bin/python3 and nothing else.

import ctypes
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
PGBOUNCER_BIN = os.environ.get("PGBOUNCER_BIN", "/usr/sbin/pgbouncer")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PGPILOT_BIN = os.environ.get("PGPILOT_BIN", os.path.join(REPO_ROOT, "pgpilot"))

_PR_SET_PDEATHSIG = 1


class ClusterError(Exception):
    """A process did not start or a setup step failed; the message says which and why."""


def pg_tool(name):
    """Absolute path of a PostgreSQL 15 program (psql, pgbench, initdb...)."""
    return os.path.join(PG_BIN, name)


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_as_user():
    """The account our servers run as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError("running as root but there is no `postgres` user to run servers as")
    return "postgres"


def server_user_kwargs():
    """subprocess keyword arguments that run a child as the server account (uid, gid, groups)."""
    user = run_as_user()
    if user is None:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid,
            "extra_groups": os.getgrouplist(user, pw.pw_gid)}


def give_to_server_user(path):
    """Make <path> (file or dir tree) owned by the server account, so it can read and write it."""
    user = run_as_user()
    if user is None:
        return
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def raise_fd_limit(wanted):
    """
    Raise our RLIMIT_NOFILE soft limit to at least <wanted> (the hard one too when we are root).
    Children inherit it, so a pooler started afterwards may raise its own soft limit as far.
    Returns the soft limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted and os.geteuid() == 0:
        hard = wanted
    new_soft = wanted if hard == resource.RLIM_INFINITY else min(max(soft, wanted), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    return new_soft


def _die_with_parent(sig):
    # Runs in the child between fork and exec (after the uid switch, which would clear it): if
    # the bench is SIGKILLed, the kernel still stops what it started.
    def hook():
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return hook


class ProcessGroup:
    """
    Every long-running process of one bench/demo run. start() registers a process; stop_all()
    stops them newest first by PID (stop signal, then SIGKILL after a grace period). Use it as a
    context manager: leaving the block stops everything, whatever the reason. SIGTERM is turned
    into KeyboardInterrupt while it is active, so `kill PID` cleans up like Ctrl-C.
    """

    def __init__(self):
        self.procs = []  # (name, Popen, stop signal, log path)
        self._old_term = None
        self._old_int = None

    def __enter__(self):
        self._old_term = signal.signal(signal.SIGTERM, self._on_sigterm)
        # Python leaves SIGINT ignored when it started ignored (a background job of a script):
        # a Ctrl-C or kill -INT must still reach us and stop everything.
        self._old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, *exc):
        self.stop_all()
        signal.signal(signal.SIGTERM, self._old_term or signal.SIG_DFL)
        signal.signal(signal.SIGINT, self._old_int or signal.SIG_DFL)
        return False

    @staticmethod
    def _on_sigterm(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    def start(self, name, argv, log_path, stop_signal=signal.SIGTERM, death_signal=signal.SIGKILL,
              cwd=None, env=None):
        """
        Start <argv> as the server account, its stdout+stderr appended to <log_path>, in its own
        session (so the terminal's Ctrl-C reaches only us and we stop it in order). Returns Popen.
        """
        log = open(log_path, "ab")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True,
                                 preexec_fn=_die_with_parent(death_signal),
                                 **server_user_kwargs())
        finally:
            log.close()
        self.procs.append((name, p, stop_signal, log_path))
        return p

    def stop(self, p, timeout=10.0):
        """Stop one process that start() returned, by PID; SIGKILL when it overstays <timeout>."""
        for i, (name, q, sig, _) in enumerate(self.procs):
            if q is p:
                del self.procs[i]
                _stop_pid(q, sig, timeout)
                return

    def stop_all(self):
        while self.procs:
            name, p, sig, _ = self.procs.pop()
            _stop_pid(p, sig, 10.0)

    def dead(self):
        """Names and exit codes of registered processes that have exited on their own."""
        return [(name, p.returncode) for name, p, _, _ in self.procs if p.poll() is not None]


def _stop_pid(p, sig, timeout):
    if p.poll() is not None:
        return
    try:
        os.kill(p.pid, sig)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def tail(path, n=20):
    """The last <n> lines of a log file, for error messages."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "(no log: %s)" % e


def wait_listening(port, proc, log_path, what, timeout=30.0):
    """Wait until 127.0.0.1:<port> accepts a TCP connection; fail early if <proc> exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ClusterError("%s exited with status %s during startup; log %s:\n%s"
                               % (what, proc.returncode, log_path, tail(log_path)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ClusterError("%s did not listen on port %d within %.0f s; log %s:\n%s"
                               % (what, port, timeout, log_path, tail(log_path)))
        time.sleep(0.05)


class WorkDir:
    """A temp dir for one run, readable by the server account; removed by cleanup()."""

    def __init__(self, prefix, keep=False):
        self.path = tempfile.mkdtemp(prefix=prefix)
        self.keep = keep
        os.chmod(self.path, 0o755)
        give_to_server_user(self.path)

    def sub(self, name):
        p = os.path.join(self.path, name)
        os.makedirs(p, exist_ok=True)
        give_to_server_user(p)
        return p

    def cleanup(self):
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


class Postgres:
    """
    One PostgreSQL 15 node in <base>/data, listening on 127.0.0.1:<port> and on a unix socket in
    <base>, where the superuser `postgres` logs in by peer auth. <hba_host> is the pg_hba method
    for TCP from 127.0.0.1 (trust for bench, scram-sha-256 for the demo).
    """

    def __init__(self, group, base, port=None, hba_host="scram-sha-256", settings=None,
                 name="postgres"):
        self.group = group
        self.base = base
        self.datadir = os.path.join(base, "data")
        self.port = port or free_port()
        self.hba_host = hba_host
        self.settings = dict(settings or {})
        self.name = name
        self.log_path = os.path.join(base, "postgres.log")
        self.proc = None

    def _run(self, argv, what, input=None):
        r = subprocess.run(argv, input=input, capture_output=True, cwd=self.base, text=True,
                           **server_user_kwargs())
        if r.returncode != 0:
            raise ClusterError("%s failed (status %d): %s" % (what, r.returncode,
                                                               (r.stderr or r.stdout).strip()))
        return r.stdout

    def init(self):
        self._run([pg_tool("initdb"), "-D", self.datadir, "-U", "postgres", "-E", "UTF8",
                   "--locale=C", "--auth-local=peer", "--auth-host=" + self.hba_host,
                   "--no-instructions"], "initdb")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "'%s'" % self.base,
            "max_connections": "200",
            "logging_collector": "off",
        }
        conf.update(self.settings)
        with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        give_to_server_user(self.datadir)

    def start(self, timeout=60.0):
        # postgres itself (not pg_ctl) so that the PID we hold is the postmaster's. SIGINT is
        # its fast shutdown; if we die, SIGQUIT (immediate shutdown) still stops its children.
        self.proc = self.group.start(self.name, [pg_tool("postgres"), "-D", self.datadir],
                                     self.log_path, stop_signal=signal.SIGINT,
                                     death_signal=signal.SIGQUIT, cwd=self.base)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ClusterError("postgres exited with status %s during startup; log %s:\n%s"
                                   % (self.proc.returncode, self.log_path, tail(self.log_path)))
            r = subprocess.run([pg_tool("pg_isready"), "-q", "-h", self.base, "-p", str(self.port),
                                "-U", "postgres"],
                               capture_output=True)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ClusterError("postgres not ready within %.0f s; log %s:\n%s"
                                   % (timeout, self.log_path, tail(self.log_path)))
            time.sleep(0.1)

    def stop(self):
        if self.proc is not None:
            self.group.stop(self.proc, timeout=30.0)
            self.proc = None

    def psql(self, sql, dbname="postgres"):
        """Run <sql> as the superuser over the unix socket; returns the unaligned output."""
        return self._run([pg_tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          "-h", self.base, "-p", str(self.port), "-U", "postgres", "-d", dbname,
                          "-c", sql], "psql %r" % sql)

    def create_user_db(self, user, password, dbname):
        """A login role and a database it owns (so pgbench -i may create tables in it)."""
        self.psql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (user, password.replace("'", "''")))
        self.psql("CREATE DATABASE %s OWNER %s" % (dbname, user))


def pooler_kind(binary):
    """'pgbouncer' when <binary> is PgBouncer (by its name), else 'pgpilot'."""
    return "pgbouncer" if "pgbouncer" in os.path.basename(binary) else "pgpilot"


class Pooler:
    """
    pgpilot or PgBouncer with one ini file and one userlist in <base>. Same ini for both; the
    main section is named after the program, which pgpilot also accepts as [pgbouncer]. The
    admin console database is named the same way (pgpilot also answers to `pgbouncer`).
    """

    def __init__(self, group, base, binary, databases, users, settings=None, port=None, name=None):
        self.group = group
        self.base = base
        self.binary = binary
        self.kind = pooler_kind(binary)
        self.name = name or self.kind
        self.port = port or free_port()
        self.databases = databases  # name -> libpq-style "host=... port=... dbname=..."
        self.users = users  # name -> password (plain text: the pooler logs in to the server)
        self.settings = dict(settings or {})
        self.ini_path = os.path.join(base, self.name + ".ini")
        self.userlist_path = os.path.join(base, self.name + "-userlist.txt")
        self.log_path = os.path.join(base, self.name + ".log")
        self.proc = None

    @property
    def admin_db(self):
        return self.kind

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def write_config(self):
        with open(self.userlist_path, "w") as f:
            for user, password in self.users.items():
                f.write('"%s" "%s"\n' % (user, password.replace('"', '""')))
        os.chmod(self.userlist_path, 0o600)
        conf = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "md5",
            "auth_file": self.userlist_path,
            "pool_mode": "transaction",
        }
        conf.update(self.settings)
        with open(self.ini_path, "w") as f:
            f.write("[databases]\n")
            for db, target in self.databases.items():
                f.write("%s = %s\n" % (db, target))
            f.write("\n[%s]\n" % self.kind)
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        give_to_server_user(self.ini_path)
        give_to_server_user(self.userlist_path)

    def start(self, timeout=20.0):
        if not os.access(self.binary, os.X_OK):
            raise ClusterError("%s binary %s is missing or not executable%s"
                               % (self.kind, self.binary,
                                  " (run `make`)" if self.kind == "pgpilot" else ""))
        self.write_config()
        # Foreground (no -d): the PID we hold is the pooler's, for /proc CPU and RSS readings.
        self.proc = self.group.start(self.name, [self.binary, self.ini_path], self.log_path,
                                     stop_signal=signal.SIGTERM, cwd=self.base)
        wait_listening(self.port, self.proc, self.log_path, self.name, timeout)

    def stop(self):
        if self.proc is not None:
            self.group.stop(self.proc)
            self.proc = None

    def conninfo(self, dbname, user, password=None):
        s = "host=127.0.0.1 port=%d dbname=%s user=%s" % (self.port, dbname, user)
        if password is not None:
            s += " password=%s" % password
        return s
