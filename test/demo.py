#!/usr/bin/python3
# pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
#
# `make demo`: a throwaway PostgreSQL 15 with ./pgpilot in front of it (transaction pooling),
# instructions for psql, pgbench and the admin console, then wait for Ctrl-C or SIGTERM and stop
# and remove everything. DEMO_SMOKE=1 starts it all, proves one query goes through, prints the
# instructions and exits (for tests). PGPILOT_BIN=/usr/sbin/pgbouncer runs PgBouncer instead.
# The cluster is a list of nodes plus shared services, so that the HA demo (etcd, three nodes)
# adds entries rather than rewrites.

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
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


def main(argv=None):
    ap = argparse.ArgumentParser(description="start PostgreSQL + pgpilot and show how to use it")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) at the end")
    args = ap.parse_args(argv)
    smoke = os.environ.get("DEMO_SMOKE", "") not in ("", "0")
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
