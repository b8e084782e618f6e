#!/usr/bin/python3
# pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
#
# `make demo`: by default an HA cluster in a temp dir: etcd, three PostgreSQL 15 nodes on
# 127.0.0.11-13 (one primary, two streaming replicas), one pgpilot agent in front of each, and a
# BIND named with the zone pg.test when named is installed (the new primary publishes
# primary.pg-test.pg.test). It prints how to connect (read-write `app`, read-only `app_ro`, the
# admin consoles), how to kill the primary to watch a failover and how to see DNS follow; then it
# waits for Ctrl-C or SIGTERM and stops and removes everything, each process by its PID.
# DEMO_SMOKE=1 starts it all, writes one row through pgpilot, reads it on app_ro, prints the
# instructions and exits 0 (for tests).
# DEMO_MODE=single: the older single-node demo, a throwaway PostgreSQL 15 with ./pgpilot in front
# of it (PGPILOT_BIN=/usr/sbin/pgbouncer runs PgBouncer instead).

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_REPO, "bench"))
sys.path.insert(0, os.path.join(_REPO, "test", "integration"))
import pgcluster  # noqa: E402

DEMO_USER = "demo"
DEMO_DB = "demo"


def tool(name):
    """How to spell a PostgreSQL client program in printed instructions."""
    return name if shutil.which(name) else pgcluster.pg_tool(name)


class Node:
    """One database node: a PostgreSQL server and the pgpilot in front of it."""

    def __init__(self, name, pg, pooler=None):
        self.name = name
        self.pg = pg
        self.pooler = pooler


class DemoCluster:
    """
    Everything one demo runs, started in order and stopped (by the ProcessGroup) in reverse.
    Today: one node. Shared services (etcd) and more nodes slot in as start steps.
    """

    def __init__(self, group, workdir, pooler_bin, password):
        self.group = group
        self.workdir = workdir
        self.pooler_bin = pooler_bin
        self.password = password
        self.nodes = []

    def start(self):
        node = self.start_node("node1")
        self.start_pooler(node)

    def start_node(self, name):
        pg = pgcluster.Postgres(self.group, self.workdir.sub(name), hba_host="scram-sha-256",
                                name="postgres-" + name)
        pg.init()
        pg.start()
        pg.create_user_db(DEMO_USER, self.password, DEMO_DB)
        node = Node(name, pg)
        self.nodes.append(node)
        return node

    def start_pooler(self, node):
        pooler = pgcluster.Pooler(
            self.group, self.workdir.sub(node.name + "-pooler"), self.pooler_bin,
            {DEMO_DB: "host=127.0.0.1 port=%d dbname=%s" % (node.pg.port, DEMO_DB)},
            {DEMO_USER: self.password},
            settings={"auth_type": "md5", "admin_users": DEMO_USER, "stats_users": DEMO_USER,
                      "default_pool_size": "20", "max_client_conn": "500"},
            name=pgcluster.pooler_kind(self.pooler_bin) + "-" + node.name)
        pooler.start()
        node.pooler = pooler
        return pooler

    def entry_pooler(self):
        """The pooler a user should connect to."""
        return self.nodes[0].pooler

    def instructions(self):
        p = self.entry_pooler()
        pw = self.password
        psql, pgbench = tool("psql"), tool("pgbench")
        out = ["", "pgpilot demo is running (files in %s)" % self.workdir.path, ""]
        for n in self.nodes:
            out.append("  %-8s PostgreSQL 15  127.0.0.1:%-5d  pid %-7d log %s"
                       % (n.name, n.pg.port, n.pg.proc.pid, n.pg.log_path))
            if n.pooler:
                out.append("  %-8s %-13s  127.0.0.1:%-5d  pid %-7d log %s"
                           % (n.name, n.pooler.kind, n.pooler.port, n.pooler.pid,
                              n.pooler.log_path))
        out += [
            "",
            "Connect through %s with psql:" % p.kind,
            '  %s "%s"' % (psql, p.conninfo(DEMO_DB, DEMO_USER, pw)),
            "",
            "Load pgbench tables and run a 10 s benchmark through %s:" % p.kind,
            "  PGPASSWORD=%s %s -h 127.0.0.1 -p %d -U %s -i %s"
            % (pw, pgbench, p.port, DEMO_USER, DEMO_DB),
            "  PGPASSWORD=%s %s -h 127.0.0.1 -p %d -U %s -c 10 -j 2 -T 10 %s"
            % (pw, pgbench, p.port, DEMO_USER, DEMO_DB),
            "",
            "Admin console (SHOW POOLS; SHOW CLIENTS; SHOW STATS; SHOW CONFIG; ...):",
            '  %s "%s"' % (psql, p.conninfo(p.admin_db, DEMO_USER, pw)),
            "",
            "The pooler's config: %s" % p.ini_path,
            "",
        ]
        return "\n".join(out)

    def smoke_query(self):
        """One query through the entry pooler with psql, as a user would; returns its output."""
        p = self.entry_pooler()
        r = subprocess.run([pgcluster.pg_tool("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-c", "SELECT 'through the pooler: ' || current_user || '@' "
                                  "|| current_database()",
                            p.conninfo(DEMO_DB, DEMO_USER, self.password)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise pgcluster.ClusterError("query through %s failed: %s\npooler log %s:\n%s"
                                         % (p.kind, r.stderr.strip(), p.log_path,
                                            pgcluster.tail(p.log_path)))
        return r.stdout.strip()


def wait_for_stop(group):
    """Sleep until Ctrl-C / SIGTERM (KeyboardInterrupt) or until one of our processes dies."""
    while True:
        dead = group.dead()
        if dead:
            raise pgcluster.ClusterError(", ".join("%s exited with status %s" % d for d in dead))
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# the HA demo (default)


class HaDemo:
    """etcd + 3 PostgreSQL nodes + 3 pgpilot agents (+ named) from test/integration/cluster.py."""

    def __init__(self, keep=False, pg_rto=10):
        import cluster  # test/integration/cluster.py
        import named
        self.C = cluster
        self.keep = keep
        self.named = None
        if named.available():
            self.named = named.Named()
        dns = None
        if self.named:
            dns = {"update_servers": "127.0.0.1:%d" % self.named.port, "zone": "pg.test",
                   "tsig_key_file": self.named.key_file, "ttl": 5,
                   "primary_name": "primary.pg-test", "update_timeout": 1}
        self.ha = cluster.HaCluster(n=3, pg_rto=pg_rto, dns=dns)

    def start(self):
        if self.named:
            self.named.start()
        self.ha.start()

    def stop(self):
        left = self.ha.destroy(keep=self.keep)
        if self.named:
            self.named.stop(cleanup=not self.keep)
        if left:
            print("demo: still running after stop: %s" % left, file=sys.stderr)

    def dead(self):
        """pgpilots that exited on their own (a killed one is reported once)."""
        out = []
        for m, p in self.ha.pilots.items():
            if p.proc is not None and p.proc.poll() is not None and not getattr(p, "_told", False):
                p._told = True
                out.append((m, p.proc.returncode))
        return out

    def smoke(self):
        """One write through the first replica's pgpilot (`app`, routed to the primary) and
        one read of it through `app_ro` (routed to a replica)."""
        C = self.C
        via = self.ha.pilots[self.ha.members[1]]
        with via.connect() as c:
            row = c.execute("INSERT INTO writes (writer, seq) VALUES ('demo', 1) "
                            "RETURNING inet_server_port(), pg_is_in_recovery()").fetchone()
        if row[1]:
            raise pgcluster.ClusterError("app reached a node in recovery (port %d)" % row[0])

        def read():
            with via.connect(dbname="app_ro") as c:
                return c.execute("SELECT count(*), inet_server_port(), pg_is_in_recovery() "
                                 "FROM writes WHERE writer = 'demo'").fetchone()
        got = C.wait_for(lambda: (lambda r: r if r[0] == 1 else None)(read()), 15, 0.2,
                         "the row on app_ro")
        if not got[2]:
            raise pgcluster.ClusterError("app_ro reached the primary (port %d)" % got[1])
        return ("wrote through pgpilot :%d to the primary (PostgreSQL port %d), read it back "
                "on app_ro from a replica (PostgreSQL port %d)" % (via.port, row[0], got[1]))

    def instructions(self):
        C, ha = self.C, self.ha
        psql = tool("psql")
        primary = ha.etcd_leader() or ha.members[0]
        out = ["", "pgpilot HA demo is running (files in %s)" % ha.base, "",
               "  etcd      %s  pid %d" % (ha.etcd.url, ha.etcd.proc.pid)]
        if self.named:
            out.append("  named     127.0.0.1:%d (zone pg.test)  pid %d"
                       % (self.named.port, self.named.proc.pid))
        for m in ha.members:
            n, p = ha.nodes[m], ha.pilots[m]
            out.append("  %-10s PostgreSQL %s:%-5d pid %-7s  pgpilot 127.0.0.1:%-5d pid %-7d%s"
                       % (m, n.host, n.port, n.postmaster_pid(), p.port, p.proc.pid,
                          "  <- primary" if m == primary else ""))
        out += ["", "Read-write (`app`, routed to the primary) and read-only (`app_ro`, routed to "
                "a replica), through each pgpilot (password %s):" % C.APP_PASSWORD]
        for m in ha.members:
            p = ha.pilots[m]
            out.append('  %s "host=127.0.0.1 port=%d user=%s password=%s dbname=app"'
                       % (psql, p.port, C.APP_USER, C.APP_PASSWORD))
            out.append('  %s "host=127.0.0.1 port=%d user=%s password=%s dbname=app_ro"'
                       % (psql, p.port, C.APP_USER, C.APP_PASSWORD))
        out += ["", "Admin consoles (SHOW CLUSTER; SHOW HA; SHOW POOLS; FAILOVER <member>; "
                "MAINTENANCE ON|OFF):"]
        for m in ha.members:
            out.append('  %s "host=127.0.0.1 port=%d user=%s password=%s dbname=pgpilot"  # %s'
                       % (psql, ha.pilots[m].port, C.ADMIN_USER, C.ADMIN_PASSWORD, m))
        pn, pp = ha.nodes[primary], ha.pilots[primary]
        out += ["", "Watch a failover: kill the primary's node (its pgpilot and PostgreSQL) with",
                "  kill -9 %d %s" % (pp.proc.pid, pn.postmaster_pid() or "<postmaster pid>"),
                "then run SHOW CLUSTER on another node's admin console: a replica is primary "
                "within pg_rto = %d s," % ha.pg_rto,
                "and a psql session on `app` through a surviving pgpilot goes on without "
                "reconnecting."]
        if self.named:
            out += ["", "See DNS follow the primary (it is on %s now):" % pn.host,
                    "  " + self.named.dig_command("primary.pg-test.pg.test")]
        out += ["", "Logs: <dir>/<member>-pilot/pgpilot.log and <dir>/<member>/postgres.log", ""]
        return "\n".join(out)


def main_ha(args, smoke):
    status = 1
    demo = None
    old_term = signal.signal(signal.SIGTERM, _sigterm)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        demo = HaDemo(keep=args.keep)
        print("starting etcd, 3 PostgreSQL 15 nodes and 3 pgpilot agents%s ..."
              % (" and BIND named" if demo.named else ""), flush=True)
        demo.start()
        if smoke:
            print("smoke test: %s" % demo.smoke())
        print(demo.instructions(), flush=True)
        if smoke:
            status = 0
        else:
            print("Press Ctrl-C to stop the demo; everything it started is stopped and removed.",
                  flush=True)
            try:
                while True:
                    for m, rc in demo.dead():
                        print("demo: pgpilot %s exited (status %s)" % (m, rc), flush=True)
                    time.sleep(0.5)
            except KeyboardInterrupt:
                print("\nstopping the demo", flush=True)
                status = 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", file=sys.stderr)
        status = 130
    except (pgcluster.ClusterError, RuntimeError, AssertionError, OSError) as e:
        print("demo: %s" % e, file=sys.stderr)
        if demo is not None:
            print(demo.ha.logs(limit=3000), file=sys.stderr)
    finally:
        if demo is not None:
            demo.stop()
            if args.keep:
                print("temp dir kept: %s" % demo.ha.base)
        signal.signal(signal.SIGTERM, old_term or signal.SIG_DFL)
        signal.signal(signal.SIGINT, old_int or signal.SIG_DFL)
    return status


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def main(argv=None):
    ap = argparse.ArgumentParser(description="start an HA cluster (etcd, PostgreSQL, pgpilot, "
                                 "named) or, with DEMO_MODE=single, one PostgreSQL + pgpilot, "
                                 "and show how to use it")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) at the end")
    args = ap.parse_args(argv)
    smoke = os.environ.get("DEMO_SMOKE", "") not in ("", "0")
    if os.environ.get("DEMO_MODE", "ha") != "single":
        return main_ha(args, smoke)
    password = "demo-" + secrets.token_hex(6)
    workdir = pgcluster.WorkDir("pgpilot-demo-", keep=args.keep)
    status = 1
    try:
        with pgcluster.ProcessGroup() as group:
            cluster = DemoCluster(group, workdir, pgcluster.PGPILOT_BIN, password)
            print("starting PostgreSQL 15 and %s ..." % pgcluster.pooler_kind(
                pgcluster.PGPILOT_BIN), flush=True)
            cluster.start()
            if smoke:
                print("smoke test: %s" % cluster.smoke_query())
            print(cluster.instructions(), flush=True)
            if smoke:
                status = 0
            else:
                print("Press Ctrl-C to stop the demo; everything it started is stopped and "
                      "removed.", flush=True)
                try:
                    wait_for_stop(group)
                except KeyboardInterrupt:
                    print("\nstopping the demo", flush=True)
                    status = 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", file=sys.stderr)
        status = 130
    except pgcluster.ClusterError as e:
        print("demo: %s" % e, file=sys.stderr)
    finally:
        if args.keep:
            print("temp dir kept: %s" % workdir.path)
        workdir.cleanup()
    return status


if __name__ == "__main__":
    sys.exit(main())
