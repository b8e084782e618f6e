"""Process lifecycle: command line (--version, --help, -d, bad arguments), signals (HUP, TERM,
INT, QUIT, USR1/USR2), graceful and fast shutdown, no processes left behind."""

import os
import signal
import subprocess
import threading
import time

import psycopg
import pytest

import harness

# Shutdown signals. pgpilot follows PgBouncer >= 1.23: TERM = graceful (stop accepting, wait for
# clients to leave), INT = safe/fast (wait for servers to be released), QUIT = immediate.
# PgBouncer 1.18 (Debian): INT = safe (wait for servers), TERM = immediate, QUIT not handled.
GRACEFUL = signal.SIGTERM if harness.is_pgpilot() else signal.SIGINT
FAST = signal.SIGINT
IMMEDIATE = signal.SIGQUIT if harness.is_pgpilot() else signal.SIGTERM


def run_cli(*args):
    return subprocess.run([harness.pooler_binary(), *args], capture_output=True, text=True,
                          timeout=10, user=harness.RUN_USER, group=harness.RUN_USER,
                          extra_groups=[])


def test_version():
    """--version prints the program name and version and exits 0."""
    r = run_cli("--version")
    assert r.returncode == 0
    out = r.stdout + r.stderr
    if harness.is_pgpilot():
        assert out.lower().startswith("pgpilot")
    else:
        assert out.startswith("PgBouncer")
    assert any(ch.isdigit() for ch in out.splitlines()[0])


def test_help():
    """--help prints a usage text mentioning the config file and -d, and exits 0."""
    r = run_cli("--help")
    assert r.returncode == 0
    out = r.stdout + r.stderr
    assert "-d" in out and ("config" in out.lower() or ".ini" in out.lower())


def test_bad_option():
    """An unknown option: non-zero exit and a message on stderr."""
    r = run_cli("--no-such-option", "/dev/null")
    assert r.returncode != 0
    assert r.stderr.strip()


def test_missing_config_file():
    """A config file that does not exist: non-zero exit naming the file."""
    r = run_cli("/nonexistent/pooler.ini")
    assert r.returncode != 0
    assert "/nonexistent/pooler.ini" in r.stdout + r.stderr


def test_daemon_mode(pooler_factory):
    """-d daemonizes: the command returns 0 at once, the pidfile holds a live PID that serves
    clients; SIGTERM to that PID ends it and removes the pidfile."""
    p = pooler_factory(start=False, settings={"pidfile": None, "logfile": None})
    p.settings["pidfile"] = p.pidfile
    p.settings["logfile"] = os.path.join(p.dir, "daemon.log")
    p.write_ini()
    r = subprocess.run(p.argv("-d"), capture_output=True, text=True, timeout=10,
                       user=harness.RUN_USER, group=harness.RUN_USER, extra_groups=[])
    assert r.returncode == 0, r.stdout + r.stderr
    pid = harness.wait_until(lambda: os.path.exists(p.pidfile) and
                             open(p.pidfile).read().strip(), 5, what="pidfile")
    pid = int(pid)
    p.extra_pids.append(pid)
    harness.REGISTRY.add(pid, "daemonized pooler")
    assert harness.pid_alive(pid)
    p.wait_ready()
    with p.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    os.kill(pid, signal.SIGTERM)
    assert harness.wait_pid_gone(pid, 10)
    assert not os.path.exists(p.pidfile)
    with open(os.path.join(p.dir, "daemon.log")) as f:
        assert f.read().strip(), "the daemon wrote nothing to its logfile"


def test_pidfile_foreground(pooler_factory):
    """In the foreground the pidfile (when configured) holds the process's own PID."""
    p = pooler_factory(settings={"pidfile": None})
    p.stop()
    p.settings["pidfile"] = p.pidfile
    p.write_ini()
    p.start()
    assert int(open(p.pidfile).read().strip()) == p.proc.pid


def start_query(conn, sql):
    res = {}

    def run():
        try:
            res["rows"] = conn.execute(sql).fetchall()
        except psycopg.Error as e:
            res["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, res


def test_graceful_shutdown_signal(pooler_factory, pg):
    """Graceful shutdown (pgpilot: SIGTERM; PgBouncer 1.18: SIGINT): the running query
    finishes with its result; once its client has left, the process exits 0, no longer listens,
    and no server connection is left in PostgreSQL."""
    p = pooler_factory()
    c = p.connect()
    t, res = start_query(c, "SELECT pg_sleep(1.5), 'finished'")
    time.sleep(0.4)
    p.signal(GRACEFUL)
    t.join(10)
    assert res.get("rows") == [("", "finished")], res
    c.close()
    assert p.wait_exit(15) == 0
    assert not harness.port_accepts(p.port)
    harness.wait_until(lambda: not pg.backends(user="md5user", dbname="appdb"), 5,
                       what="server connections closed")


def test_fast_shutdown_signal(pooler_factory, pg):
    """Safe/fast shutdown (SIGINT): waits while a transaction is open, then exits once the
    servers are released even though the (transaction-mode) client is still connected; the
    client's next query fails and PostgreSQL has no server connection left."""
    p = pooler_factory()
    c = p.connect()
    c.execute("BEGIN")
    c.execute("SELECT 1")
    p.signal(FAST)
    time.sleep(1)
    assert p.running(), "exited with a transaction still open"
    c.execute("COMMIT")
    assert p.wait_exit(10) == 0
    with pytest.raises(psycopg.OperationalError):
        c.execute("SELECT 1")
    harness.wait_until(lambda: not pg.backends(user="md5user", dbname="appdb"), 5,
                       what="server connections closed")
    c.close()


def test_immediate_shutdown_signal(pooler_factory):
    """Immediate shutdown (pgpilot: SIGQUIT; PgBouncer 1.18: SIGTERM): exits within 2 s even
    with a query running, whose client gets an error."""
    p = pooler_factory()
    c = p.connect()
    t, res = start_query(c, "SELECT pg_sleep(5)")
    time.sleep(0.3)
    p.signal(IMMEDIATE)
    p.wait_exit(2)
    t.join(5)
    assert "error" in res
    assert not harness.port_accepts(p.port)
    c.close()


@pytest.mark.pgpilot_only
def test_graceful_shutdown_refuses_new_clients(pooler_factory):
    """During a graceful shutdown (SIGTERM) that waits for a client, a new client is refused
    (57P01 'admin shutdown' or connection refused) instead of hanging; the waiting client's
    query completes and the process exits when it leaves."""
    p = pooler_factory()
    c = p.connect()
    t, res = start_query(c, "SELECT pg_sleep(1.5), 'finished'")
    time.sleep(0.3)
    p.signal(GRACEFUL)
    time.sleep(0.3)
    try:
        harness.RawClient(p.port, timeout=3).startup("md5user", "appdb", "md5pass")
        raise AssertionError("a new client was admitted during shutdown")
    except harness.ServerError as e:
        assert e.sqlstate == "57P01"
    except (ConnectionError, OSError):
        pass
    t.join(10)
    assert res.get("rows") == [("", "finished")]
    assert p.running(), "graceful shutdown must wait for the connected client"
    c.close()
    assert p.wait_exit(10) == 0


def test_usr1_usr2_pause_resume(pooler_factory):
    """SIGUSR1 pauses (a new query waits), SIGUSR2 resumes (it completes)."""
    p = pooler_factory()
    c = p.connect()
    c.execute("SELECT 1")
    p.signal(signal.SIGUSR1)
    harness.wait_until(lambda: p.admin_dicts("SHOW DATABASES")[0]["paused"] in (1, True) or
                       _paused_state(p), 5, what="paused")
    t, res = start_query(c, "SELECT 'after resume'")
    time.sleep(1)
    assert not res, "query ran while paused"
    p.signal(signal.SIGUSR2)
    t.join(10)
    assert res.get("rows") == [("after resume",)]
    c.close()


def _paused_state(p):
    # PgBouncer's global PAUSE shows in the log ("pause mode" / "PAUSE"), not in SHOW DATABASES
    return "pause" in p.log.lower()


def test_no_leftover_processes(pooler_factory):
    """After stop, the pooler PID is gone and the harness registry has no live pooler."""
    p = pooler_factory()
    pid = p.proc.pid
    p.stop()
    assert harness.wait_pid_gone(pid, 5)
    alive = [what for _, what in harness.REGISTRY.alive() if what.startswith(p.kind)]
    assert not alive
