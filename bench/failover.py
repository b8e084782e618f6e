#!/usr/bin/python3
# pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
#
# `make bench-failover`: measure what a client sees when the primary's node dies. A three-node HA
# cluster (test/integration/cluster.py: etcd, PostgreSQL 15 on 127.0.0.11-13, one pgpilot agent
# per node); one writer (psycopg, one connection, transaction pooling, through a pgpilot that
# survives) inserts a row at a steady rate; the primary's PostgreSQL and pgpilot are killed with
# SIGKILL; we record the time from the kill to the writer's first commit on the new primary (RTO),
# the transactions that failed, the reconnects the writer had to make and the acknowledged commits
# the new primary does not have. The killed node is then brought back (its pgpilot restarted, it
# rejoins as a replica) so that every run starts with three nodes. See bench/README.md.

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "test", "integration"))

import cluster as C  # noqa: E402

RESULTS_DIR = "/tmp/pgpilot-bench-results"


class Run:
    def __init__(self, pg_rto, n):
        self.pg_rto = pg_rto
        self.n = n
        self.killed = self.new = self.via = None
        self.promoted = None  # s from the kill to a new primary (key + out of recovery)
        self.rto = None       # s from the kill to the writer's first commit on the new primary
        self.failed = 0
        self.reconnects = 0
        self.acked = 0
        self.lost = None
        self.lost_bytes = None
        self.rejoin = None    # s for the killed node to stream again
        self.error = None

    def ok(self, pg_rpo):
        return (self.error is None and self.rto is not None and self.rto <= self.pg_rto and
                self.reconnects == 0 and self.lost_bytes is not None and
                self.lost_bytes <= pg_rpo)


def one_run(ha, run, interval, log):
    old = ha.etcd_leader()
    if old is None:
        raise RuntimeError("no leader before the run")
    via = next(m for m in ha.members if m != old)
    run.killed, run.via = old, via
    w = C.Writer(ha.pilots[via], f"rto{run.pg_rto}-run{run.n}", interval=interval,
                 reconnect=True)
    w.start()
    try:
        C.wait_for(lambda: len(w.acks) >= 50, 30, 0.05, "the writer's first commits")
        n0, l0 = len(w.acks), C.wal_bytes(ha.nodes[old])
        C.wait_for(lambda: len(w.acks) >= n0 + 50, 30, 0.05, "more commits")
        bpr = (C.wal_bytes(ha.nodes[old]) - l0) / max(1, len(w.acks) - n0)
        t_kill = time.time()
        ha.kill_node(old)
        run.new, run.promoted = ha.wait_new_primary(old, timeout=run.pg_rto + 30)
        port = ha.nodes[run.new].port
        first = C.wait_for(lambda: next((a for a in w.acks if a[2] > t_kill and a[3] == port),
                                        None), run.pg_rto + 30, 0.02,
                           "the writer's first commit on the new primary")
        run.rto = first[2] - t_kill
        n1 = len(w.acks)
        C.wait_for(lambda: len(w.acks) >= n1 + 20, 20, 0.05, "commits after the failover")
    finally:
        w.stop()
    run.failed = len(w.errors)
    run.reconnects = w.reconnects + (1 if w.lost_connection else 0)
    run.acked = len(w.acks)
    lost = w.acked_keys() - C.rows_present(ha.nodes[run.new], [w.wname])
    run.lost = len(lost)
    run.lost_bytes = int(run.lost * bpr)
    log(f"  pg_rto {run.pg_rto} run {run.n}: killed {old}, {run.new} primary after "
        f"{run.promoted:.2f}s, first commit through {via} after {run.rto:.2f}s, "
        f"{run.failed} failed, {run.reconnects} reconnects, {run.lost} lost")


def rejoin(ha, run, log):
    """Restart the killed node's pgpilot and wait until its PostgreSQL streams from the new
    primary again."""
    t0 = time.monotonic()
    ha.pilots[run.killed].start()
    port = ha.nodes[run.new].port
    C.wait_for(lambda: (ha.nodes[run.killed].wal_receiver() or (None, None, None))[0] ==
               "streaming" and ha.nodes[run.killed].wal_receiver()[2] == port, 120, 0.2,
               f"{run.killed} to rejoin as a replica of {run.new}")
    ha.wait_members_listed(30)
    run.rejoin = time.monotonic() - t0
    log(f"  {run.killed} rejoined in {run.rejoin:.1f}s")


def table(runs, pg_rpo):
    head = ("pg_rto", "run", "killed", "new", "promoted s", "RTO s", "failed tx", "reconnects",
            "acked", "lost", "lost bytes", "rejoin s", "ok")
    rows = []
    for r in runs:
        f = (lambda v, fmt="%.2f": "-" if v is None else fmt % v)
        rows.append((str(r.pg_rto), str(r.n), r.killed or "-", r.new or "-", f(r.promoted),
                     f(r.rto), str(r.failed), str(r.reconnects), str(r.acked), f(r.lost, "%d"),
                     f(r.lost_bytes, "%d"), f(r.rejoin, "%.1f"),
                     "ok" if r.ok(pg_rpo) else ("FAILED: " + r.error if r.error else "MISS")))
    widths = [max(len(h), *(len(x[i]) for x in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths)), "-" * (sum(widths) + 2 * 12)]
    out += ["  ".join(c.rjust(w) for c, w in zip(x, widths)) for x in rows]
    out.append("")
    for rto in sorted({r.pg_rto for r in runs}):
        rs = [r for r in runs if r.pg_rto == rto and r.rto is not None]
        if rs:
            v = sorted(r.rto for r in rs)
            out.append(f"pg_rto {rto}: RTO min {v[0]:.2f} / median {v[len(v) // 2]:.2f} / "
                       f"max {v[-1]:.2f} s over {len(v)} runs; failed tx "
                       f"{sum(r.failed for r in rs)}, reconnects {sum(r.reconnects for r in rs)}, "
                       f"lost rows {sum(r.lost or 0 for r in rs)}")
    out.append(f"targets: RTO <= pg_rto, 0 reconnects, lost <= pg_rpo ({pg_rpo} bytes)")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="failover RTO/RPO as a client sees it")
    ap.add_argument("--runs", type=int, default=5, help="kills per pg_rto (default 5)")
    ap.add_argument("--rto", default="30,10", help="pg_rto values, comma separated (30,10)")
    ap.add_argument("--rpo", type=int, default=1048576, help="pg_rpo in bytes (1048576)")
    ap.add_argument("--interval", type=float, default=0.01,
                    help="seconds between the writer's inserts (0.01)")
    ap.add_argument("--quick", action="store_true", help="one run at pg_rto 10")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs)")
    args = ap.parse_args(argv)
    rtos = [int(x) for x in args.rto.split(",") if x.strip()]
    runs_per = args.runs
    if args.quick:
        rtos, runs_per = [10], 1
    if not os.access(C.PGPILOT_BIN, os.X_OK):
        print(f"bench-failover: {C.PGPILOT_BIN} is missing (run make)", file=sys.stderr)
        return 1
    lines = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    runs = []
    status = 0
    for rto in rtos:
        log(f"pg_rto {rto}: starting etcd, 3 PostgreSQL nodes and 3 pgpilot agents")
        ha = C.HaCluster(n=3, pg_rto=rto, pg_rpo=args.rpo)
        try:
            ha.start()
            for i in range(1, runs_per + 1):
                run = Run(rto, i)
                runs.append(run)
                try:
                    one_run(ha, run, args.interval, log)
                    if i < runs_per:
                        rejoin(ha, run, log)
                except (AssertionError, RuntimeError, OSError) as e:
                    run.error = str(e).splitlines()[0][:120]
                    log(f"  pg_rto {rto} run {i} failed: {e}")
                    status = 1
                    break
        except KeyboardInterrupt:
            log("interrupted")
            status = 130
            break
        except (AssertionError, RuntimeError, OSError) as e:
            log(f"pg_rto {rto}: cluster failed: {e}")
            status = 1
        finally:
            if status:
                log(ha.logs(limit=4000))
            left = ha.destroy(keep=args.keep)
            if left:
                log(f"still running after stop: {left}")
            if args.keep:
                log(f"temp dir kept: {ha.base}")
        if status == 130:
            break
    result = table(runs, args.rpo)
    print("\n" + result)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, time.strftime("failover-%Y%m%d-%H%M%S.txt"))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n\n" + result + "\n")
    print(f"\nresults written to {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
