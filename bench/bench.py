#!/usr/bin/python3
# pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
#
# `make bench`: pgpilot side by side with PgBouncer in front of one throwaway PostgreSQL 15.
# Throughput, latency and the pooler's own CPU time per transaction under pgbench -S (simple,
# extended, connect-per-transaction), runs interleaved so drift hits both poolers alike; then
# memory per idle logged-in client and a 10,000-client hold. bench/README.md explains the table.

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import pgcluster  # noqa: E402

RESULTS_DIR = "/tmp/pgpilot-bench-results"
BENCH_USER = "bench"
BENCH_DB = "bench"
TARGET_TPS_RATIO = 1.10  # pgpilot TPS / PgBouncer TPS, at least
TARGET_CPU_RATIO = 0.70  # pgpilot CPU per transaction / PgBouncer's, at most
TARGET_IDLE_BYTES = 800  # pgpilot bytes of RSS per idle logged-in client, at most

MODES = [
    ("simple", ["-M", "simple"]),
    ("extended", ["-M", "extended"]),
    ("simple -C", ["-M", "simple", "-C"]),
]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="pgbench through pgpilot and PgBouncer (and directly), side by side")
    ap.add_argument("--duration", type=int, help="seconds per pgbench run (default 20)")
    ap.add_argument("--repeat", type=int, help="interleaved rounds of every run (default 2)")
    ap.add_argument("--clients", type=int, default=50, help="pgbench clients (default 50)")
    ap.add_argument("--threads", type=int, default=2, help="pgbench threads (default 2)")
    ap.add_argument("--scale", type=int, help="pgbench -i scale (default 10)")
    ap.add_argument("--pool-size", type=int, default=20, help="default_pool_size (default 20)")
    ap.add_argument("--idle-clients", type=int, help="idle clients for the memory test (2000)")
    ap.add_argument("--hold-clients", type=int, help="clients for the hold test (10000)")
    ap.add_argument("--hold-seconds", type=float, help="how long they are held (default 5)")
    ap.add_argument("--auth", default="md5", choices=["trust", "plain", "md5", "scram-sha-256"],
                    help="pooler auth_type for clients (default md5)")
    ap.add_argument("--only", choices=["pgpilot", "pgbouncer"], help="bench one pooler only")
    ap.add_argument("--skip", action="append", default=[], choices=["pgbench", "idle", "hold"],
                    help="skip a part (repeatable)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 3 s runs, 1 round, scale 1, 200 idle, 1000 held")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    a = ap.parse_args(argv)
    quick = {"duration": 3, "repeat": 1, "scale": 1, "idle_clients": 200, "hold_clients": 1000,
             "hold_seconds": 1.0}
    full = {"duration": 20, "repeat": 2, "scale": 10, "idle_clients": 2000,
            "hold_clients": 10000, "hold_seconds": 5.0}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    for k in ("duration", "repeat", "clients", "threads", "scale", "pool_size", "idle_clients",
              "hold_clients"):
        if getattr(a, k) < 1:
            ap.error("--%s must be at least 1" % k.replace("_", "-"))
    if a.hold_seconds < 0:
        ap.error("--hold-seconds must not be negative")
    return a


def version_of(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        out = (r.stdout or r.stderr).strip().splitlines()
        return out[0] if out else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


class Target:
    """Where pgbench connects: PostgreSQL itself or a pooler (which has a PID to measure)."""

    def __init__(self, name, port, password, pooler=None):
        self.name = name
        self.port = port
        self.password = password
        self.pooler = pooler

    @property
    def pid(self):
        return self.pooler.pid if self.pooler else None


class Bench:
    def __init__(self, args, group, workdir):
        self.args = args
        self.group = group
        self.workdir = workdir
        self.password = "bench-pw"
        self.pg = None
        self.pooler_bins = []
        if args.only != "pgpilot":
            self.pooler_bins.append(("pgbouncer", pgcluster.PGBOUNCER_BIN))
        if args.only != "pgbouncer":
            self.pooler_bins.append(("pgpilot", pgcluster.PGPILOT_BIN))
        self.runs = {}  # (mode, target) -> list of (PgbenchResult, pooler cpu seconds or None)
        self.run_errors = {}  # (mode, target) -> first error text
        self.idle = {}  # pooler name -> dict or error string
        self.hold = {}  # pooler name -> dict or error string
        self.errors = 0

    def say(self, msg):
        print(msg, flush=True)

    # ------------------------------------------------------------ setup

    def start_postgres(self):
        self.pg = pgcluster.Postgres(self.group, self.workdir.sub("pg"), hba_host="trust",
                                     settings={"shared_buffers": "'256MB'"})
        self.say("starting PostgreSQL 15 on port %d" % self.pg.port)
        self.pg.init()
        self.pg.start()
        self.pg.create_user_db(BENCH_USER, self.password, BENCH_DB)
        if "pgbench" in self.args.skip:
            return  # the client tests only log in and run SELECT 1: no tables needed
        self.say("pgbench -i -s %d" % self.args.scale)
        r = subprocess.run([pgcluster.pg_tool("pgbench"), "-i", "-q", "-s", str(self.args.scale),
                            "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", BENCH_USER, BENCH_DB],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise pgcluster.ClusterError("pgbench -i failed: %s" % r.stderr.strip())

    def new_pooler(self, name, binary, tag):
        a = self.args
        settings = {
            "auth_type": a.auth,
            "default_pool_size": str(a.pool_size),
            "max_client_conn": str(a.hold_clients + 100),
            "max_db_connections": "0",
            "admin_users": BENCH_USER,
            "log_connections": "0",
            "log_disconnections": "0",
        }
        p = pgcluster.Pooler(self.group, self.workdir.sub("%s-%s" % (name, tag)), binary,
                             {BENCH_DB: "host=127.0.0.1 port=%d dbname=%s"
                              % (self.pg.port, BENCH_DB)},
                             {BENCH_USER: self.password}, settings=settings,
                             name="%s-%s" % (name, tag))
        p.start()
        return p

    # ------------------------------------------------------------ pgbench

    def pgbench(self, target, mode_args, duration):
        a = self.args
        args = ["-n", "-S", "-c", str(a.clients), "-j", str(a.threads), "-T", str(duration)]
        return common.run_pgbench(pgcluster.pg_tool("pgbench"), "127.0.0.1", target.port,
                                  BENCH_USER, target.password, BENCH_DB, args + mode_args,
                                  timeout=duration + 120)

    def run_pgbench_part(self):
        a = self.args
        targets = [Target("postgres", self.pg.port, self.password)]
        for name, binary in self.pooler_bins:
            try:
                p = self.new_pooler(name, binary, "pgbench")
                targets.append(Target(name, p.port, self.password, p))
            except pgcluster.ClusterError as e:
                self.errors += 1
                for mode, _ in MODES:
                    self.run_errors[(mode, name)] = "did not start: %s" % e
                self.say("%s: could not start: %s" % (name, e))
        if not a.quick:
            self.say("warm-up: 3 s per target")
            for t in targets:
                try:
                    self.pgbench(t, ["-M", "simple"], 3)
                except RuntimeError as e:
                    self.say("  warm-up through %s failed: %s" % (t.name, str(e).splitlines()[0]))
        for rnd in range(1, a.repeat + 1):
            for mode, mode_args in MODES:
                for t in targets:
                    key = (mode, t.name)  # a failed round is recorded; later ones still run
                    cpu0 = common.cpu_seconds(t.pid) if t.pid else None
                    try:
                        res = self.pgbench(t, mode_args, a.duration)
                    except (RuntimeError, ValueError) as e:
                        self.errors += 1
                        self.run_errors.setdefault(key, str(e).splitlines()[0])
                        self.say("round %d %-10s %-10s FAILED: %s"
                                 % (rnd, mode, t.name, str(e).splitlines()[0]))
                        continue
                    cpu = common.cpu_seconds(t.pid) - cpu0 if t.pid else None
                    self.runs.setdefault(key, []).append((res, cpu))
                    extra = ""
                    if cpu is not None and res.transactions:
                        extra = "  cpu %.2f s = %.1f us/tx" % (cpu, cpu / res.transactions * 1e6)
                    if res.failed:
                        extra += "  %d failed tx" % res.failed
                    self.say("round %d %-10s %-10s tps %10.1f  lat %7.3f ms%s"
                             % (rnd, mode, t.name, res.tps, res.latency_ms, extra))
        for t in targets:
            if t.pooler:
                t.pooler.stop()

    # ------------------------------------------------------------ idle memory and hold

    async def _idle_memory(self, pooler):
        n = self.args.idle_clients
        pid = pooler.pid
        # One login first: the pool, its server connection and the cached server parameters
        # exist before the baseline, so the delta is the clients' own cost only.
        first = await common.IdleClient.connect("127.0.0.1", pooler.port, BENCH_USER,
                                                self.password, BENCH_DB)
        await first.query("SELECT 1")
        await first.close()
        await asyncio.sleep(0.5)
        rss0 = common.rss_bytes(pid)
        clients, errors = await common.open_idle_clients(n, "127.0.0.1", pooler.port, BENCH_USER,
                                                         self.password, BENCH_DB)
        await asyncio.sleep(1.0)
        rss1 = common.rss_bytes(pid)
        still_open = sum(1 for c in clients if c.is_open())
        await common.close_clients(clients)
        return {"n": n, "ok": len(clients), "open": still_open, "errors": errors,
                "rss0": rss0, "rss1": rss1, "per_client": (rss1 - rss0) / n}

    async def _hold(self, pooler):
        a = self.args
        t0 = time.monotonic()
        clients, errors = await common.open_idle_clients(a.hold_clients, "127.0.0.1", pooler.port,
                                                         BENCH_USER, self.password, BENCH_DB)
        login_s = time.monotonic() - t0
        await asyncio.sleep(a.hold_seconds)
        still_open = sum(1 for c in clients if c.is_open())
        # A few of the held clients run a query: held connections must still be usable.
        step = max(1, len(clients) // 100)
        sample = clients[::step][:100]
        q_ok, q_errors = 0, []
        for c in sample:
            try:
                rows = await asyncio.wait_for(c.query("SELECT 1"), 30)
                if rows == [["1"]]:
                    q_ok += 1
                else:
                    q_errors.append("unexpected rows %r" % rows)
            except (OSError, common.PgError, asyncio.TimeoutError,
                    asyncio.IncompleteReadError) as e:
                q_errors.append("%s: %s" % (type(e).__name__, e))
        rss = common.rss_bytes(pooler.pid)
        await common.close_clients(clients)
        return {"n": a.hold_clients, "ok": len(clients), "open": still_open, "errors": errors,
                "login_s": login_s, "sample": len(sample), "q_ok": q_ok, "q_errors": q_errors,
                "rss": rss, "alive": pooler.proc.poll() is None}

    def run_client_parts(self):
        a = self.args
        for name, binary in self.pooler_bins:
            try:
                pooler = self.new_pooler(name, binary, "clients")
            except pgcluster.ClusterError as e:
                self.errors += 1
                for part, store in (("idle", self.idle), ("hold", self.hold)):
                    if part not in a.skip:
                        store[name] = "did not start: %s" % e
                continue
            try:
                if "idle" not in a.skip:
                    self.say("%s: %d idle logged-in clients" % (name, a.idle_clients))
                    try:
                        r = asyncio.run(self._idle_memory(pooler))
                        self.idle[name] = r
                        if r["errors"] or r["open"] != r["n"]:
                            self.errors += 1
                    except Exception as e:  # report it and go on to the next part
                        self.errors += 1
                        self.idle[name] = "%s: %s" % (type(e).__name__, e)
                if "hold" not in a.skip:
                    if pooler.proc.poll() is not None:
                        self.hold[name] = "pooler died (status %s)" % pooler.proc.returncode
                        self.errors += 1
                        continue
                    self.say("%s: holding %d clients" % (name, a.hold_clients))
                    try:
                        r = asyncio.run(self._hold(pooler))
                        self.hold[name] = r
                        if (r["errors"] or r["open"] != r["n"] or r["q_ok"] != r["sample"]
                                or not r["alive"]):
                            self.errors += 1
                    except Exception as e:
                        self.errors += 1
                        self.hold[name] = "%s: %s" % (type(e).__name__, e)
            finally:
                pooler.stop()

    # ------------------------------------------------------------ report

    def report(self):
        a = self.args
        out = []
        w = out.append
        w("pgpilot bench  %s  %s, %d cpus"
          % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), platform.node(),
             os.cpu_count()))
        w("  postgres:  %s" % version_of([pgcluster.pg_tool("postgres"), "--version"]))
        for name, binary in self.pooler_bins:
            w("  %-10s %s (%s)" % (name + ":", binary, version_of([binary, "--version"])))
        if "pgbench" not in a.skip:
            w("")
            w("pgbench -S (select only), scale %d, %d clients, %d threads, %d s per run, %d "
              "interleaved round(s); poolers: pool_mode transaction, default_pool_size %d, "
              "auth_type %s" % (a.scale, a.clients, a.threads, a.duration, a.repeat,
                                a.pool_size, a.auth))
            w("")
            w("%-10s %-10s %10s %8s %10s  %s" % ("mode", "target", "TPS", "lat ms", "CPU us/tx",
                                                "TPS of each round"))
            w("-" * 78)
            names = ["postgres"] + [n for n, _ in self.pooler_bins]
            summary = {}
            for mode, _ in MODES:
                for name in names:
                    runs = self.runs.get((mode, name), [])
                    if not runs:
                        err = self.run_errors.get((mode, name), "no run")
                        w("%-10s %-10s %10s  %s" % (mode, name, "FAILED", err[:60]))
                        continue
                    tps = statistics.mean(r.tps for r, _ in runs)
                    lat = statistics.mean(r.latency_ms for r, _ in runs)
                    cpu_us = None
                    if runs[0][1] is not None:
                        tx = sum(r.transactions for r, _ in runs)
                        cpu_us = sum(c for _, c in runs) / tx * 1e6 if tx else None
                    summary[(mode, name)] = (tps, cpu_us)
                    failed = sum(r.failed for r, _ in runs)
                    w("%-10s %-10s %10.1f %8.3f %10s  %s%s"
                      % (mode, name, tps, lat, "-" if cpu_us is None else "%.1f" % cpu_us,
                         " ".join("%.0f" % r.tps for r, _ in runs),
                         ("  (%d failed tx)" % failed) if failed else ""))
            if a.only is None:
                w("")
                w("pgpilot / PgBouncer   TPS (target >= %.2f)   CPU per tx (target <= %.2f)"
                  % (TARGET_TPS_RATIO, TARGET_CPU_RATIO))
                for mode, _ in MODES:
                    p, b = summary.get((mode, "pgpilot")), summary.get((mode, "pgbouncer"))
                    if not p or not b:
                        w("%-20s  n/a (a run failed)" % mode)
                        continue
                    tr = p[0] / b[0]
                    cr = (p[1] / b[1]) if p[1] is not None and b[1] else None
                    w("%-20s  %5.2f %-4s                %s"
                      % (mode, tr, "ok" if tr >= TARGET_TPS_RATIO else "MISS",
                         "n/a" if cr is None else "%5.2f %s"
                         % (cr, "ok" if cr <= TARGET_CPU_RATIO else "MISS")))
        if "idle" not in a.skip:
            w("")
            w("memory per idle logged-in client: (VmRSS after - before) / N, N = %d "
              "(pgpilot target <= %d B)" % (a.idle_clients, TARGET_IDLE_BYTES))
            for name, _ in self.pooler_bins:
                r = self.idle.get(name, "not run")
                if isinstance(r, str):
                    w("  %-10s FAILED: %s" % (name, r[:200]))
                    continue
                verdict = ""
                if name == "pgpilot":
                    verdict = "  ok" if r["per_client"] <= TARGET_IDLE_BYTES else "  MISS"
                w("  %-10s %7.0f B/client  (RSS %.1f -> %.1f MiB; %d/%d logged in, %d still open)%s"
                  % (name, r["per_client"], r["rss0"] / 2**20, r["rss1"] / 2**20, r["ok"],
                     r["n"], r["open"], verdict))
                if r["errors"]:
                    w("  %-10s first login error: %s" % ("", r["errors"][0]))
        if "hold" not in a.skip:
            w("")
            w("holding %d concurrent logged-in clients for %.0f s" % (a.hold_clients,
                                                                    a.hold_seconds))
            for name, _ in self.pooler_bins:
                r = self.hold.get(name, "not run")
                if isinstance(r, str):
                    w("  %-10s FAILED: %s" % (name, r[:200]))
                    continue
                good = (not r["errors"] and r["open"] == r["n"] and r["q_ok"] == r["sample"]
                        and r["alive"])
                per_client = ""
                idle = self.idle.get(name)
                if isinstance(idle, dict) and r["ok"]:
                    # the idle test's baseline was taken on this same pooler process
                    per_client = " (%.0f B/client over the idle baseline)" \
                        % ((r["rss"] - idle["rss0"]) / r["ok"])
                w("  %-10s %s: %d/%d logged in (%.1f s), %d open after hold, %d/%d sample "
                  "queries ok, RSS %.1f MiB%s, pooler %s"
                  % (name, "ok" if good else "FAILED", r["ok"], r["n"], r["login_s"], r["open"],
                     r["q_ok"], r["sample"], r["rss"] / 2**20, per_client,
                     "alive" if r["alive"] else "DEAD"))
                for e in (r["errors"][:1] + r["q_errors"][:1]):
                    w("  %-10s first error: %s" % ("", e))
        return "\n".join(out) + "\n"


def main(argv=None):
    args = parse_args(argv)
    # Our idle clients and the pooler (which inherits the limit) each need a descriptor per
    # client; the pooler raises its own soft limit up to the hard one we pass on.
    pgcluster.raise_fd_limit(args.hold_clients + 2048)
    workdir = pgcluster.WorkDir("pgpilot-bench-", keep=args.keep)
    bench = None
    status = 1
    try:
        with pgcluster.ProcessGroup() as group:
            bench = Bench(args, group, workdir)
            bench.start_postgres()
            if "pgbench" not in args.skip:
                bench.run_pgbench_part()
            if "idle" not in args.skip or "hold" not in args.skip:
                bench.run_client_parts()
            text = bench.report()
            os.makedirs(RESULTS_DIR, exist_ok=True)
            path = os.path.join(RESULTS_DIR,
                                datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".txt")
            with open(path, "w") as f:
                f.write(text)
            print()
            print(text, end="")
            print("\nresults written to %s" % path)
            if bench.errors:
                print("%d error(s) during the bench, see above" % bench.errors)
            status = 1 if bench.errors else 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        status = 130
    except pgcluster.ClusterError as e:
        print("bench: %s" % e, file=sys.stderr)
    except Exception:
        traceback.print_exc()
    finally:
        if args.keep:
            print("temp dir kept: %s" % workdir.path)
        workdir.cleanup()
    return status


if __name__ == "__main__":
    sys.exit(main())
