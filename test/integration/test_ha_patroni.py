"""HA follow mode in front of a Patroni cluster.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

Debian's Patroni 3.0 (/usr/bin/patroni, run as postgres) with the etcd3 DCS manages two
PostgreSQL 15 nodes on 127.0.0.11 and .12 under /service/pg-test/, the key layout pgpilot also
uses. A pgpilot with ha_mode = follow (no local node) routes `app` to whichever member holds
Patroni's leader key, before and after `patronictl switchover --force`.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster as C  # noqa: E402

PATRONI = "/usr/bin/patroni"
PATRONICTL = "/usr/bin/patronictl"
SUPER_PASSWORD = "pgpass"

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not os.access(C.PGPILOT_BIN, os.X_OK), reason="no ./pgpilot"),
              pytest.mark.skipif(not os.access(PATRONI, os.X_OK), reason="patroni not installed")]


class PatroniNode:
    def __init__(self, base, name, host, etcd_port):
        self.base = os.path.join(base, name)
        os.makedirs(self.base, exist_ok=True)
        self.name = name
        self.node = C.PgNode(self.base, host)
        self.api_port = C.free_port(host)
        self.conf = os.path.join(self.base, "patroni.yml")
        self.log_path = os.path.join(self.base, "patroni.log")
        self.proc = None
        cfg = {
            "scope": C.CLUSTER_NAME,
            "namespace": C.NAMESPACE + "/",
            "name": name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"{host}:{self.api_port}",
                        "connect_address": f"{host}:{self.api_port}"},
            "etcd3": {"hosts": f"127.0.0.1:{etcd_port}"},
            "bootstrap": {
                "dcs": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5,
                        "maximum_lag_on_failover": 1048576,
                        "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                       "parameters": {"wal_level": "replica",
                                                      "wal_log_hints": "on",
                                                      "hot_standby": "on",
                                                      "max_wal_senders": 10,
                                                      "max_replication_slots": 10,
                                                      "fsync": "off",
                                                      "password_encryption": "md5",
                                                      "dynamic_shared_memory_type": "mmap"}}},
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
            },
            "postgresql": {
                "listen": f"{host}:{self.node.port}",
                "connect_address": f"{host}:{self.node.port}",
                "data_dir": self.node.datadir,
                "bin_dir": C.PG_BIN,
                "pgpass": os.path.join(self.base, "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": SUPER_PASSWORD},
                    "replication": {"username": C.REPL_USER, "password": C.REPL_PASSWORD},
                },
                "parameters": {"unix_socket_directories": self.base,
                               "shared_buffers": "16MB", "max_connections": 60},
                "pg_hba": [line for line in C.HBA.splitlines() if line],
                # a fast checkpoint: the default waits for the next timed one
                "basebackup": [{"checkpoint": "fast"}],
            },
            "tags": {"nofailover": False, "noloadbalance": False},
        }
        with open(self.conf, "w") as f:
            json.dump(cfg, f, indent=1)  # JSON is YAML
        C.chown_tree(self.base)

    def start(self):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([PATRONI, self.conf], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.base,
                                         start_new_session=True, **C._as_postgres())
        finally:
            log.close()
        C._register(self.proc.pid, f"patroni {self.name}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # patroni stops its PostgreSQL first
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.node.stop()


class PatroniCluster:
    def __init__(self):
        import tempfile
        self.base = tempfile.mkdtemp(prefix="pgpilot-patroni-", dir=C.TMP_ROOT)
        os.chmod(self.base, 0o755)
        self.etcd = C.Etcd(self.base)
        self.members = {}
        self.pilot = None

    def start(self):
        self.etcd.start()
        for i, name in enumerate(("pg-test-1", "pg-test-2")):
            self.members[name] = PatroniNode(self.base, name, C.NODE_HOSTS[i],
                                             self.etcd.client_port)
        first = self.members["pg-test-1"]
        first.start()
        C.wait_for(lambda: self.leader() == "pg-test-1" and
                   first.node.in_recovery() is False, 60, 0.2,
                   "Patroni to bootstrap pg-test-1\n" + C.tail(first.log_path))
        node = first.node
        node.query(f"CREATE ROLE {C.APP_USER} LOGIN PASSWORD '{C.APP_PASSWORD}'")
        node.query(f"CREATE DATABASE {C.APP_DB} OWNER {C.APP_USER}")
        self.members["pg-test-2"].start()
        C.wait_for(lambda: (self.members["pg-test-2"].node.wal_receiver() or ("",))[0] ==
                   "streaming", 60, 0.2,
                   "pg-test-2 to stream\n" + C.tail(self.members["pg-test-2"].log_path))
        C.wait_for(lambda: json.loads(self.etcd.get(f"{C.NAMESPACE}/{C.CLUSTER_NAME}/members/"
                                                     "pg-test-2") or "{}").get("state") ==
                   "running", 30, 0.2, "Patroni to report pg-test-2 running")
        self.pilot = C.Pilot(os.path.join(self.base, "pilot"), "follower", None, self.etcd.url,
                             mode="follow", databases={
                                 "app": f"cluster={C.CLUSTER_NAME} role=primary dbname={C.APP_DB}"},
                             cluster_extra={"pg_conn": f"user=postgres password={SUPER_PASSWORD} "
                                                       "dbname=postgres"})
        self.pilot.start()

    def leader(self):
        with contextlib.suppress(Exception):
            return self.etcd.get(f"{C.NAMESPACE}/{C.CLUSTER_NAME}/leader")
        return None

    def destroy(self):
        if self.pilot:
            self.pilot.stop()
        for m in reversed(list(self.members.values())):
            m.stop()
        self.etcd.stop()
        if not C.KEEP_TMP:
            import shutil
            shutil.rmtree(self.base, ignore_errors=True)

    def logs(self):
        out = [f"----- pgpilot (follow) -----\n{self.pilot.log[-6000:] if self.pilot else ''}"]
        for m in self.members.values():
            out.append(f"----- patroni {m.name} -----\n{C.tail(m.log_path, 40)}")
        return "\n".join(out)


@pytest.fixture
def patroni(request):
    pc = PatroniCluster()
    try:
        pc.start()
        yield pc
    except BaseException:
        sys.stderr.write(pc.logs())
        raise
    finally:
        if C.request_failed(request):
            sys.stderr.write("\n" + pc.logs() + "\n")
        pc.destroy()


def routed(pilot):
    """(port, in_recovery) of the node `app` reaches through the follower pgpilot."""
    with pilot.connect(connect_timeout=5) as c:
        return tuple(c.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone())


def test_follow_mode_routes_to_patroni_leader(patroni):
    """pgpilot in follow mode sends `app` to Patroni's leader; after `patronictl switchover
    --force` to the replica it sends new transactions to the new leader, and a client connected
    before the switchover keeps its connection and commits there."""
    pc = patroni
    n1, n2 = pc.members["pg-test-1"], pc.members["pg-test-2"]
    assert C.wait_for(lambda: routed(pc.pilot) == (n1.node.port, False), 20, 0.2,
                      "app routed to pg-test-1 (Patroni's leader)\n" + pc.pilot.log[-3000:])
    held = pc.pilot.connect()
    held.execute("CREATE TABLE IF NOT EXISTS t (x int)")
    cfg = n1.conf
    r = subprocess.run([PATRONICTL, "-c", cfg, "switchover", "--leader", "pg-test-1",
                        "--candidate", "pg-test-2", "--force"], capture_output=True, text=True,
                       timeout=60, **C._as_postgres())
    assert r.returncode == 0, r.stdout + r.stderr
    C.wait_for(lambda: pc.leader() == "pg-test-2" and n2.node.in_recovery() is False, 60, 0.2,
               "Patroni to make pg-test-2 the leader")
    t0 = time.monotonic()
    C.wait_for(lambda: routed(pc.pilot) == (n2.node.port, False), 20, 0.2,
               "app routed to pg-test-2 after the switchover\n" + pc.pilot.log[-3000:])
    sys.stderr.write(f"\nrouting followed the switchover {time.monotonic() - t0:.2f}s after "
                     "Patroni's leader key moved\n")

    def held_commits():
        try:
            return held.execute("INSERT INTO t VALUES (1) RETURNING inet_server_port()"
                                ).fetchone()[0] == n2.node.port
        except Exception as e:  # the in-flight transaction on the old leader may fail once
            if held.closed or held.broken:
                raise AssertionError(f"connection lost: {e}")
            return False
    C.wait_for(held_commits, 15, 0.2, "the held connection to commit on the new leader")
    held.close()
