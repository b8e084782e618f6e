#!/usr/bin/python3
# pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
#
# `make bench-faults`: the project's reference for HA. Each scenario injects one fault (or a
# series) into a fresh three-node cluster (test/integration/cluster.py: etcd, PostgreSQL 15 on
# 127.0.0.11-13 with each node's listen address, port and socket dir in its own postgresql.conf,
# one pgpilot agent per node, a TCP forwarder between each agent and etcd) while writers insert
# rows directly on every node and through every pgpilot. Per run it reports the split-brain
# windows, the acknowledged commits the final primary lacks (and how far past the fork they were),
# the results relayed from a deposed primary, the RTO and the longest write gap through pgpilot;
# then a Markdown table per scenario. Every process it starts is stopped by its PID. See
# bench/README.md, section bench-faults.

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "test", "integration"))
sys.path.insert(0, HERE)

import psycopg  # noqa: E402

import cluster as C  # noqa: E402
import pgcluster  # noqa: E402

RESULTS_DIR = "/tmp/pgpilot-bench-results"
NODE_MARK = "# ---- this node's own settings (bench/faults.py) ----"


# ---------------------------------------------------------------------------------------------
# the cluster: per-node settings in postgresql.conf itself


class OwnConfNode(C.PgNode):
    """A PgNode whose listen_addresses, port, socket dir and cluster_name are at the end of its
    own postgresql.conf (the usual layout), not in an included file. pg_basebackup copies the
    primary's postgresql.conf, so the block after NODE_MARK is replaced, never added twice; a
    pg_rewind that copies the source's postgresql.conf brings the source's block along."""

    def write_node_conf(self, name):
        path = os.path.join(self.datadir, "postgresql.conf")
        with open(path) as f:
            text = f.read()
        cut = text.find(NODE_MARK)
        if cut >= 0:
            text = text[:cut]
        if not text.endswith("\n"):
            text += "\n"
        text += (f"{NODE_MARK}\nlisten_addresses = '{self.host}'\nport = {self.port}\n"
                 f"unix_socket_directories = '{self.base}'\ncluster_name = '{name}'\n")
        with open(path, "w") as f:
            f.write(text)
        inc = os.path.join(self.datadir, "pgpilot_node.conf")
        if os.path.exists(inc):
            os.remove(inc)
        C.chown_tree(self.base)


class FaultCluster(C.HaCluster):
    """HaCluster with OwnConfNode nodes and a TcpProxy between each agent and etcd."""

    def __init__(self, pg_rto, pg_rpo):
        super().__init__(n=3, pg_rto=pg_rto, pg_rpo=pg_rpo, proxies=True)

    def start(self, start_pilots=True, timeout=None):
        t0 = time.monotonic()
        self.etcd.start()
        for i, m in enumerate(self.members):
            self.nodes[m] = OwnConfNode(os.path.join(self.base, m), C.NODE_HOSTS[i])
        first = self.nodes[self.members[0]]
        first.init_from_template(self.members[0])
        first.pg_ctl_start()
        for m in self.members[1:]:
            self.nodes[m].basebackup_from(first, m)
            self.nodes[m].pg_ctl_start()
        for m in self.members[1:]:
            C.wait_for(lambda m=m: (self.nodes[m].wal_receiver() or ("",))[0] == "streaming", 30,
                       0.1, f"{m} to stream from {self.members[0]}")
        for m in self.members:
            self.proxies[m] = C.TcpProxy(self.etcd.client_port).start()
            url = f"http://127.0.0.1:{self.proxies[m].port}"
            self.pilots[m] = C.Pilot(os.path.join(self.base, m + "-pilot"), m, self.nodes[m], url,
                                     self.pg_rto, self.pg_rpo)
        if start_pilots:
            self.start_pilots(timeout=timeout)
        self.started_at = time.monotonic() - t0
        return self


def processes_of(path):
    """Live PIDs whose command line names <path> (a pgpilot's ini file: the pgpilot and what it
    forked without exec, such as its fence guard, which a double fork gives to init)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if path.encode() in argv and C.pid_alive(int(d)):
            out.append(int(d))
    return out


def descendants(pid):
    """Every live descendant of <pid> (children, grandchildren...), from one pass over /proc."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


# ---------------------------------------------------------------------------------------------
# writers


class Writer(threading.Thread):
    """One connection (direct to a node, or through a pgpilot) running an autocommit INSERT ...
    RETURNING every 20-50 ms. Each acknowledged commit is kept as (seq, sent, acked, server port,
    WAL insert LSN, timeline, server clock at execution); each error as (seq, sent, at, SQLSTATE,
    message). A broken connection is opened again (every failed attempt is an error too)."""

    SQL = ("INSERT INTO writes (writer, seq, node, addr) VALUES (%s, %s, inet_server_port(), "
           "host(inet_server_addr())) RETURNING inet_server_port(), pg_current_wal_lsn()::text, "
           "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int, "
           "extract(epoch from clock_timestamp())::float8")

    def __init__(self, name, kind, member, connect):
        super().__init__(daemon=True, name=f"writer:{name}")
        self.wname = name
        self.kind = kind        # "direct" or "pgpilot"
        self.member = member    # the node it writes on, or the pgpilot it goes through
        self.connect = connect
        self.acks = []
        self.errors = []
        self.connects = 0
        self.stopping = threading.Event()
        self.conn = None
        self.seq = 0

    def _open(self):
        while not self.stopping.is_set():
            t = time.time()
            try:
                self.conn = self.connect()
                self.connects += 1
                return True
            except Exception as e:  # noqa: BLE001 - every failure is a recorded error
                self.errors.append((None, t, time.time(), getattr(e, "sqlstate", None),
                                    f"connect: {type(e).__name__}: {str(e).strip()[:200]}"))
                self.stopping.wait(0.2)
        return False

    def run(self):
        if not self._open():
            return
        while not self.stopping.is_set():
            self.seq += 1
            sent = time.time()
            try:
                port, lsn, tl, xt = self.conn.execute(self.SQL, (self.wname, self.seq)).fetchone()
                self.acks.append((self.seq, sent, time.time(), port, C.lsn_int(lsn), tl, xt))
            except Exception as e:  # noqa: BLE001 - a driver-level surprise is recorded too
                self.errors.append((self.seq, sent, time.time(), getattr(e, "sqlstate", None),
                                    f"{type(e).__name__}: {str(e).strip()[:200]}"))
                if not isinstance(e, psycopg.Error) or self.conn.closed or self.conn.broken:
                    try:
                        self.conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    if not self._open():
                        return
            self.stopping.wait(max(0.0, random.uniform(0.02, 0.05) - (time.time() - sent)))

    def stop(self, timeout=15):
        self.stopping.set()
        self.join(timeout)
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
        return not self.is_alive()


# ---------------------------------------------------------------------------------------------
# one run


class Run:
    """One run of one scenario: the cluster, its writers, the faults injected and the results."""

    def __init__(self, scenario, n, args, group, log):
        self.scenario = scenario
        self.n = n
        self.args = args
        self.pg_rto = args.pg_rto
        self.pg_rpo = args.pg_rpo
        self.group = group      # pgcluster.ProcessGroup for pgbench
        self.log = log
        self.ha = None
        self.writers = []
        self.faults = []        # dicts: t, old, what, ref (RTO from), any_node (RTO on any node)
        self.events = []        # (t, text)
        self.paused = set()
        self.pgbench = []
        self.t_start = None
        self.t_end = None
        self.result = {"scenario": scenario.name, "run": n, "error": None, "notes": []}

    # -- set-up
    def note(self, text):
        self.events.append((time.time(), text))
        self.log(f"    {time.strftime('%H:%M:%S')} {text}")

    def start(self):
        self.ha = FaultCluster(self.pg_rto, self.pg_rpo)
        self.ha.start()
        self.port_member = {self.ha.nodes[m].port: m for m in self.ha.members}
        for m in self.ha.members:
            node, pilot = self.ha.nodes[m], self.ha.pilots[m]
            self.writers.append(Writer(
                f"r{self.n}-direct-{m[-1]}", "direct", m,
                lambda node=node: psycopg.connect(
                    host=node.host, port=node.port, user=C.APP_USER, password=C.APP_PASSWORD,
                    dbname=C.APP_DB, autocommit=True, connect_timeout=2, sslmode="disable")))
            self.writers.append(Writer(f"r{self.n}-pilot-{m[-1]}", "pgpilot", m,
                                       lambda pilot=pilot: pilot.connect(connect_timeout=3)))
        for w in self.writers:
            w.start()
        C.wait_for(lambda: all(w.acks for w in self.writers if w.kind == "pgpilot" or
                               w.member == self.ha.members[0]), 30, 0.1,
                   "a first commit from every pgpilot writer")
        if self.scenario.load:
            self.start_load()
        time.sleep(2)
        self.t_start = time.time()

    def start_load(self):
        """pgbench beside the cluster: tables made on the primary, then a select-only pgbench
        with 2 clients on every node (each ends on its own if its node goes away)."""
        first = self.ha.nodes[self.ha.members[0]]
        C.run_pg([pgcluster.pg_tool("pgbench"), "-i", "-q", "-s", "1", "-h", first.host, "-p",
                  str(first.port), "-U", "postgres", "postgres"])
        for m in self.ha.members:
            node = self.ha.nodes[m]
            C.wait_for(lambda node=node: node.query(
                "SELECT to_regclass('pgbench_accounts') IS NOT NULL")[0][0], 30, 0.2,
                f"pgbench tables on {m}")
            self.pgbench.append(self.group.start(
                f"pgbench {m}", [pgcluster.pg_tool("pgbench"), "-n", "-S", "-c", "2", "-j", "1",
                                 "-T", "600", "-h", node.host, "-p", str(node.port), "-U",
                                 "postgres", "postgres"],
                os.path.join(self.ha.base, f"pgbench-{m}.log"), stop_signal=signal.SIGINT))

    # -- views
    def primary(self):
        """The member that holds the leader key and whose PostgreSQL is out of recovery."""
        leader = self.ha.etcd_leader()
        if leader and self.ha.nodes[leader].in_recovery() is False:
            return leader
        return None

    def fault(self, old, what, any_node=False):
        f = {"t": time.time(), "old": old, "what": what, "ref": None, "any_node": any_node}
        f["ref"] = f["t"]
        self.faults.append(f)
        self.note(f"fault: {what} ({old} is the primary)")
        return f

    def wait_new_primary(self, old, timeout):
        """A member other than <old> that holds the key and is out of recovery, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.ha.etcd_leader()
            if leader and leader != old and self.ha.nodes[leader].in_recovery() is False:
                if self.faults and "promoted_after" not in self.faults[-1]:
                    self.faults[-1]["promoted_after"] = time.time() - self.faults[-1]["t"]
                self.note(f"{leader} is the new primary")
                return leader
            time.sleep(0.1)
        self.note(f"no new primary within {timeout:.0f}s")
        return None

    def node_pids(self, m):
        """pgpilot, its descendants and its fence guard, the postmaster and its descendants:
        the whole node."""
        pids = []
        pilot = self.ha.pilots[m]
        if pilot.running():
            pids += [pilot.proc.pid] + descendants(pilot.proc.pid)
        for p in processes_of(pilot.ini_path):
            if p not in pids:
                pids += [p] + descendants(p)
        pm = self.ha.nodes[m].postmaster_pid()
        if pm:
            pids += [pm] + descendants(pm)
        return pids

    def kill_node(self, m):
        """SIGKILL of the whole node at once (node_pids: its fence guard too, as in a real
        loss of the host)."""
        pids = self.node_pids(m)
        f = self.faults[-1] if self.faults else None
        if f is not None and f["old"] == m and time.time() - f["t"] < 5:
            f["t"] = f["ref"] = time.time()  # the /proc scans took a while: the kill is now
        C.kill_pids(pids, signal.SIGKILL)
        pilot = self.ha.pilots[m]
        if pilot.proc is not None:
            try:
                pilot.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def stop_pids(self, pids):
        C.kill_pids(pids, signal.SIGSTOP)
        self.paused.update(pids)

    def cont_pids(self, pids=None):
        pids = list(self.paused if pids is None else pids)
        C.kill_pids(pids, signal.SIGCONT)
        self.paused.difference_update(pids)

    def restart_agent(self, m):
        """Start <m>'s pgpilot again; returns the time.monotonic() of the start."""
        t0 = time.monotonic()
        if self.ha.pilots[m].running():
            return t0
        try:
            self.ha.pilots[m].start()
            self.note(f"agent {m} started again")
        except RuntimeError as e:
            self.note(f"agent {m} did not start: {str(e).splitlines()[0]}")
        return t0

    def wait_rejoin(self, m, primary, timeout=90, since=None):
        """Seconds until <m> streams from <primary> (counted from <since>, a time.monotonic(),
        default now), or None at the deadline."""
        t0 = time.monotonic() if since is None else since
        port = self.ha.nodes[primary].port
        while time.monotonic() - t0 < timeout:
            wr = self.ha.nodes[m].wal_receiver()
            if wr and wr[0] == "streaming" and wr[2] == port:
                s = time.monotonic() - t0
                self.note(f"{m} streams from {primary} after {s:.1f}s")
                self.result["rejoin"] = s
                return s
            time.sleep(0.2)
        self.note(f"{m} does not stream from {primary} after {timeout}s")
        self.result["rejoin"] = None
        return None

    def settle(self, timeout):
        """Wait until one PostgreSQL is out of recovery, holds the key, and every running
        pgpilot's writer has had a commit on it in the last 2 s; then watch --observe s more."""
        deadline = time.monotonic() + timeout
        ok = False
        while time.monotonic() < deadline:
            p = self.ha.pg_primaries()
            if len(p) == 1 and self.ha.etcd_leader() == p[0]:
                port, now = self.ha.nodes[p[0]].port, time.time()
                live = [w for w in self.writers if w.kind == "pgpilot" and
                        self.ha.pilots[w.member].running()]
                if live and all(w.acks and w.acks[-1][3] == port and now - w.acks[-1][2] < 2
                                for w in live):
                    ok = True
                    break
            time.sleep(0.25)
        self.note("settled" if ok else f"not settled after {timeout:.0f}s")
        time.sleep(self.args.observe)
        return ok

    # -- end
    def finish(self):
        self.t_end = time.time()
        self.cont_pids()
        stuck = [w.wname for w in self.writers if not w.stop()]
        if stuck:
            self.result["notes"].append(f"writers still blocked at the end: {stuck}")
        for p in self.pgbench:
            self.group.stop(p)
        self.pgbench = []

    def destroy(self):
        if self.ha is None:
            return []
        self.cont_pids()
        ours = [p.ini_path for p in self.ha.pilots.values()]
        left = self.ha.destroy(keep=self.args.keep)
        # what our pgpilots forked and left behind (a fence guard outliving its agent)
        stray = [pid for path in ours for pid in processes_of(path)]
        if stray:
            C.kill_pids(stray, signal.SIGCONT)
            C.kill_pids(stray, signal.SIGTERM)
            left.append(("left by a pgpilot, sent SIGTERM", stray))
        if self.args.keep:
            self.log(f"    temp dir kept: {self.ha.base}")
        return left


# ---------------------------------------------------------------------------------------------
# analysis


def timeline_switches(node, tl):
    """{timeline: LSN at which the lineage of <tl> left it} from <node>'s history file."""
    out = {}
    if not tl or tl <= 1:
        return out
    text = node.query("SELECT pg_read_file(%s)", (f"pg_wal/{tl:08X}.history",))[0][0]
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            out[int(parts[0])] = C.lsn_int(parts[1])
    return out


def analyze(R):
    """Fill R.result from the writers' records and the final primary's rows."""
    res = R.result
    ha = R.ha
    old0 = R.faults[0]["old"] if R.faults else ha.members[0]
    acks = []   # (kind, writer, seq, sent, acked, member, lsn, tl, xt)
    for w in R.writers:
        for seq, sent, acked, port, lsn, tl, xt in w.acks:
            acks.append((w.kind, w.wname, seq, sent, acked, R.port_member.get(port, str(port)),
                         lsn, tl, xt))
    res["acked"] = sum(1 for a in acks if a[0] == "pgpilot")
    res["acked_direct"] = sum(1 for a in acks if a[0] == "direct")
    res["errors"] = sum(len(w.errors) for w in R.writers if w.kind == "pgpilot")
    res["reconnects"] = sum(max(0, w.connects - 1) for w in R.writers if w.kind == "pgpilot")

    # epochs: (member, timeline) -> first/last server execution time, first client ack time
    ep = {}
    for a in acks:
        e = ep.setdefault((a[5], a[7]), {"first_xt": a[8], "last_xt": a[8], "first_ack": a[4],
                                         "n": 0, "pilot": 0})
        e["first_xt"] = min(e["first_xt"], a[8])
        e["last_xt"] = max(e["last_xt"], a[8])
        e["first_ack"] = min(e["first_ack"], a[4])
        e["n"] += 1
        e["pilot"] += a[0] == "pgpilot"
    res["epochs"] = [f"{m} tl{tl}: {e['n']} commits" for (m, tl), e in
                     sorted(ep.items(), key=lambda kv: kv[1]["first_xt"])]

    # split brain: two members' epochs whose commit times overlap
    windows = []
    keys = list(ep)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if a[0] == b[0]:
                continue
            lo = max(ep[a]["first_xt"], ep[b]["first_xt"])
            hi = min(ep[a]["last_xt"], ep[b]["last_xt"])
            if lo <= hi:
                older, newer = (a, b) if ep[a]["first_xt"] < ep[b]["first_xt"] else (b, a)
                n_old = sum(1 for x in acks if (x[5], x[7]) == older and x[8] >= lo)
                windows.append({"old": f"{older[0]} tl{older[1]}",
                                "new": f"{newer[0]} tl{newer[1]}", "seconds": hi - lo,
                                "old_commits_after": n_old,
                                "via_pgpilot": sum(1 for x in acks if (x[5], x[7]) == older and
                                                   x[8] >= lo and x[0] == "pgpilot")})
    res["split_brain"] = windows

    # relayed: a pgpilot ack from an epoch after a later member's epoch had its first ack
    relayed = []
    for a in acks:
        if a[0] != "pgpilot":
            continue
        mine = ep[(a[5], a[7])]
        later = [e["first_ack"] for k, e in ep.items()
                 if k[0] != a[5] and e["first_xt"] > mine["first_xt"]]
        if later and a[4] > min(later):
            relayed.append((a[1], a[2], a[5], a[4] - min(later)))
    res["relayed"] = len(relayed)
    res["relayed_max_late"] = max((r[3] for r in relayed), default=None)

    # RTO per fault, and whether someone else was promoted
    rtos = []
    for i, f in enumerate(R.faults):
        until = R.faults[i + 1]["t"] if i + 1 < len(R.faults) else float("inf")
        # on any node: an insert sent after the reference point, so that the ack of one sent
        # just before the fault, still arriving, is not taken for the recovery
        first = min((a[4] for a in acks if a[0] == "pgpilot" and f["ref"] < a[4] < until and
                     (a[5] != f["old"] or (f["any_node"] and a[3] > f["ref"]))), default=None)
        rtos.append(None if first is None else first - f["ref"])
        f["promoted"] = any(k[0] != f["old"] and e["first_xt"] > f["t"] for k, e in ep.items())
    res["rto"] = rtos
    res["promoted"] = [f["promoted"] for f in R.faults]

    # the longest stretch without a pgpilot ack, from the first fault to the end
    t0 = R.faults[0]["t"] if R.faults else R.t_start
    times = sorted(a[4] for a in acks if a[0] == "pgpilot" and t0 < a[4] < R.t_end)
    pts = [t0] + times + [R.t_end]
    res["max_gap"] = max(b - a for a, b in zip(pts, pts[1:]))

    # lost: acked (writer, seq) that the final primary lacks, and how far past the fork
    final = None
    try:
        final = C.wait_for(lambda: ha.pg_primaries() if len(ha.pg_primaries()) >= 1 else None,
                           20, 0.5, "a primary at the end")
    except AssertionError:
        pass
    res["primaries_at_end"] = final or []
    res["lost"] = res["lost_direct"] = None
    if final:
        fp = ha.etcd_leader() if ha.etcd_leader() in final else final[0]
        res["final_primary"] = fp
        node = ha.nodes[fp]
        present = C.rows_present(node, [w.wname for w in R.writers])
        tl = node.query("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
                        "::bit(32)::int")[0][0]
        sw = timeline_switches(node, tl)
        lost = [a for a in acks if (a[1], a[2]) not in present]
        past = [a[6] - sw[a[7]] for a in lost if a[7] in sw and a[6] is not None]
        res["lost"] = sum(1 for a in lost if a[0] == "pgpilot")
        res["lost_direct"] = sum(1 for a in lost if a[0] == "direct")
        res["lost_past_fork_max"] = max(past, default=None)
        res["lost_detail"] = sorted({f"{a[1]} on {a[5]} tl{a[7]}" for a in lost})[:10]
        res["relayed_lost"] = sum(1 for r in relayed if (r[0], r[1]) not in present)
    res["old_primary"] = old0
    return res


def verdict(R):
    """What went wrong in this run against the HA promise (empty list: nothing)."""
    r, sc, bad = R.result, R.scenario, []
    if r.get("error"):
        bad.append("ERROR")
    if [w for w in r.get("split_brain") or [] if w["via_pgpilot"] or not sc.forced_fork]:
        bad.append("SPLIT-BRAIN")
    if r.get("lost"):
        bad.append("LOST")
    if r.get("relayed"):
        bad.append("RELAYED")
    if len(r.get("primaries_at_end") or []) != 1:
        bad.append("NO-SINGLE-PRIMARY")
    for rto, prom in zip(r.get("rto", []), r.get("promoted", [])):
        if sc.promote is False and prom:
            bad.append("PROMOTED")
        elif (sc.promote or prom) and sc.promote is not False and \
                (rto is None or rto > R.pg_rto):
            bad.append("RTO")
    if sc.rejoin and r.get("rejoin") is None:
        bad.append("NO-REJOIN")
    return sorted(set(bad))


# ---------------------------------------------------------------------------------------------
# scenarios


def sc_etcd_outage(seconds):
    def run(R):
        old = R.primary()
        f = R.fault(old, f"etcd stopped for {seconds(R):.0f}s", any_node=True)
        R.ha.etcd.stop()
        time.sleep(seconds(R))
        R.ha.etcd.start()
        f["ref"] = time.time()
        R.note("etcd started again on its data dir")
        R.settle(3 * R.pg_rto + 20)
    return run


def sc_rewind(R):
    """The node wakes PostgreSQL first: the direct writer's insert queued during the pause
    commits past the fork (up to 2 s are given for it) before pgpilot and its fence wake, so
    that the old primary needs a rewind that copies data."""
    old = R.primary()
    pilot_pids = R.node_pids(old)
    pm = R.ha.nodes[old].postmaster_pid()
    pg_pids = [p for p in pilot_pids if pm and (p == pm or p in descendants(pm))]
    R.fault(old, "whole primary node paused until a new primary, then resumed (rewind)")
    R.stop_pids(pilot_pids)
    new = R.wait_new_primary(old, 3 * R.pg_rto + 10)
    time.sleep(2)
    direct = next(w for w in R.writers if w.kind == "direct" and w.member == old)
    n0 = len(direct.acks)
    R.cont_pids(pg_pids)
    t0 = time.monotonic()
    while len(direct.acks) == n0 and time.monotonic() - t0 < 2:
        time.sleep(0.02)
    R.cont_pids()
    R.note(f"{old} resumed, PostgreSQL first: {len(direct.acks) - n0} direct commits before "
           "its pgpilot woke")
    if new:
        R.wait_rejoin(old, new)
    R.settle(2 * R.pg_rto + 20)
    if R.result.get("notes") is not None and len(direct.acks) == n0:
        R.result["notes"].append("the old primary acked no direct write past the fork")


def sc_pause(R):
    old = R.primary()
    pids = R.node_pids(old)
    R.fault(old, "whole primary node paused (SIGSTOP) for 30s")
    R.stop_pids(pids)
    new = R.wait_new_primary(old, 30)
    time.sleep(max(0.0, R.faults[-1]["t"] + 30 - time.time()))
    R.cont_pids(pids)
    R.note(f"{old} resumed")
    if new:
        R.wait_rejoin(old, new)
    R.settle(2 * R.pg_rto + 20)


def sc_agent_stop(R):
    old = R.primary()
    pid = R.ha.pilots[old].proc.pid
    R.fault(old, "SIGSTOP of the leader's pgpilot alone for 25s")
    R.stop_pids([pid])
    new = R.wait_new_primary(old, 25)
    time.sleep(max(0.0, R.faults[-1]["t"] + 25 - time.time()))
    R.cont_pids([pid])
    R.note(f"pgpilot {old} resumed")
    new = new or R.wait_new_primary(old, 5)
    if new:
        R.wait_rejoin(old, new)
    R.settle(2 * R.pg_rto + 20)


def sc_agent_kill(R):
    old = R.primary()
    R.fault(old, "kill -9 of the leader's pgpilot alone")
    R.ha.pilots[old].kill9()
    new = R.wait_new_primary(old, 3 * R.pg_rto)
    t_restart = R.restart_agent(old)
    new = new or R.wait_new_primary(old, 5)
    if new:
        R.wait_rejoin(old, new, since=t_restart)
    R.settle(2 * R.pg_rto + 20)


def sc_node_kill(R):
    old = R.primary()
    R.fault(old, "kill -9 of the primary node (pgpilot, fence guard, postmaster, children)")
    R.kill_node(old)
    R.wait_new_primary(old, 3 * R.pg_rto)
    R.settle(2 * R.pg_rto + 20)


def sc_etcd_link(mode):
    def run(R):
        old = R.primary()
        R.fault(old, f"the primary's etcd link {'refused' if mode == 'stop' else 'black-holed'}")
        R.ha.proxies[old].cut(mode)
        new = R.wait_new_primary(old, 3 * R.pg_rto)
        time.sleep(2)
        R.ha.proxies[old].restore()
        R.note("etcd link restored")
        if new:
            R.wait_rejoin(old, new)
        R.settle(2 * R.pg_rto + 20)
    return run


def sc_lag(how):
    def run(R):
        old = R.primary()
        reps = [m for m in R.ha.members if m != old]
        stopped = []
        for m in reps:
            if how == "replay":
                R.ha.nodes[m].query("SELECT pg_wal_replay_pause()")
            else:
                pid = R.ha.nodes[m].query("SELECT pid FROM pg_stat_wal_receiver")[0][0]
                stopped.append(pid)
        R.stop_pids(stopped)
        R.note(f"replicas lag ({'replay paused' if how == 'replay' else 'walreceiver stopped'})")
        node = R.ha.nodes[old]
        l0 = C.wal_bytes(node)
        rows = max(1000, 3 * R.pg_rpo // 1000)
        node.query("INSERT INTO writes (writer, seq, pad) SELECT 'bulk', g, "
                   "repeat(md5(g::text), 30) FROM generate_series(1, %s) g", (rows,),
                   dbname=C.APP_DB, timeout=30)
        R.note(f"{C.wal_bytes(node) - l0} bytes of WAL written past the replicas")
        time.sleep(3)
        R.fault(old, "kill -9 of the primary node while the replicas lag beyond pg_rpo",
                any_node=True)
        R.kill_node(old)
        R.wait_new_primary(old, 3 * R.pg_rto)
        R.restart_agent(old)
        R.cont_pids(stopped)
        for m in reps:
            if how == "replay":
                try:
                    R.ha.nodes[m].query("SELECT pg_wal_replay_resume()")
                except psycopg.Error as e:
                    R.note(f"pg_wal_replay_resume on {m}: {str(e).strip().splitlines()[0]}")
        R.note("replicas resumed")
        R.settle(3 * R.pg_rto + 20)
    return run


def sc_rejoin(R):
    old = R.primary()
    R.fault(old, "kill -9 of the primary node, then its agent started again")
    R.kill_node(old)
    new = R.wait_new_primary(old, 3 * R.pg_rto)
    t_restart = R.restart_agent(old)
    if new:
        R.wait_rejoin(old, new, since=t_restart)
    R.settle(2 * R.pg_rto + 20)


def sc_five_kills(R):
    rejoins = []
    for i in range(5):
        old = R.primary() or C.wait_for(R.primary, 30, 0.2, "a primary")
        R.fault(old, f"kill {i + 1} of 5: kill -9 of the primary node")
        R.kill_node(old)
        new = R.wait_new_primary(old, 3 * R.pg_rto)
        if new is None:
            break
        t_restart = R.restart_agent(old)
        rejoins.append(R.wait_rejoin(old, new, since=t_restart))
        R.settle(2 * R.pg_rto + 20)
    R.result["rejoin"] = None if None in rejoins or not rejoins else max(rejoins)


class Scenario:
    def __init__(self, name, fn, finding, promote=True, rejoin=False, load=False, doc="",
                 forced_fork=False):
        self.name = name
        self.fn = fn
        self.finding = finding  # the issue 9 finding it checks, 0 for the ones that hold
        self.promote = promote  # False: the RPO rule forbids a promotion; None: either is right
        self.rejoin = rejoin    # the old primary must stream from the new one afterwards
        self.load = load        # pgbench beside the cluster
        self.doc = doc
        # the scenario itself makes the old primary commit direct writes past the fork: split
        # brain windows seen by the direct writers alone are reported, not held against pgpilot
        self.forced_fork = forced_fork


SCENARIOS = [
    Scenario("etcd-outage-5s", sc_etcd_outage(lambda R: 5), 1,
             doc="etcd stopped 5 s, restarted on its data dir; RTO from etcd's return, any node"),
    Scenario("etcd-outage-long", sc_etcd_outage(lambda R: 3 * R.pg_rto), 1,
             doc="etcd stopped 3 x pg_rto, restarted; RTO from etcd's return, any node"),
    Scenario("rewind", sc_rewind, 2, rejoin=True, forced_fork=True,
             doc="whole primary node paused (a direct writer in flight) until a replica is "
                 "promoted, resumed: it wrote past the fork, must be rewound and stream"),
    Scenario("pause", sc_pause, 3, rejoin=True,
             doc="SIGSTOP of the whole primary node (pgpilot, postmaster, children) for 30 s"),
    Scenario("agent-stop", sc_agent_stop, 4, load=True,
             doc="SIGSTOP of the leader's pgpilot alone for 25 s, pgbench beside it"),
    Scenario("agent-kill", sc_agent_kill, 4, load=True,
             doc="kill -9 of the leader's pgpilot alone, pgbench beside it; restarted after"),
    Scenario("node-kill", sc_node_kill, 0,
             doc="kill -9 of the primary's pgpilot, postmaster and children at once"),
    Scenario("etcd-cut", sc_etcd_link("stop"), 0, rejoin=True,
             doc="the primary agent's etcd link refused until a new primary, then restored"),
    Scenario("etcd-blackhole", sc_etcd_link("blackhole"), 0, rejoin=True,
             doc="the primary agent's etcd link black-holed until a new primary, then restored"),
    Scenario("lag-replay-pause", sc_lag("replay"), 0, promote=None,
             doc="pg_wal_replay_pause() on both replicas, 3 x pg_rpo of WAL (received, not "
                 "replayed), primary killed: a promotion is allowed (the RPO rule counts "
                 "max(receive, replay)) but nothing acknowledged may be lost"),
    Scenario("lag-walreceiver-stop", sc_lag("receiver"), 0, promote=False,
             doc="SIGSTOP of both walreceivers, 3 x pg_rpo of WAL, primary killed: no "
                 "promotion; then it comes back"),
    Scenario("rejoin", sc_rejoin, 0, rejoin=True,
             doc="kill -9 of the primary node, its agent restarted: it streams from the new one"),
    Scenario("five-kills", sc_five_kills, 0, rejoin=True,
             doc="five kills of the primary node in a row, each node rejoining before the next"),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def one_run(sc, n, args, group, log):
    R = Run(sc, n, args, group, log)
    left = []
    try:
        R.start()
        sc.fn(R)
        R.finish()
        analyze(R)
    except KeyboardInterrupt:
        R.result["error"] = "interrupted"
        raise
    except (AssertionError, RuntimeError, OSError, psycopg.Error) as e:
        R.result["error"] = str(e).splitlines()[0][:200]
        log(f"    run failed: {e}")
        if R.ha is not None:
            log(R.ha.logs(limit=3000))
            log(R.ha.pg_logs(limit=1500))
        if R.t_start is not None and R.faults:
            try:
                R.finish()
                analyze(R)
            except Exception as e2:  # noqa: BLE001 - report what we have
                R.result["notes"].append(f"analysis after the error failed: {e2}")
    finally:
        for w in R.writers:
            w.stopping.set()
        if R.result.get("error") and R.ha is not None:
            R.result["log_tail"] = R.ha.logs(limit=2000)
        left = R.destroy()
    if left:
        R.result["notes"].append(f"still running after stop: {left}")
    R.result["verdict"] = verdict(R)
    R.result["faults"] = [{k: f[k] for k in ("what", "old", "promoted", "promoted_after")
                           if k in f}
                          for f in R.faults]
    R.result["events"] = [(round(t - (R.faults[0]["t"] if R.faults else t), 2), e)
                          for t, e in R.events]
    return R.result


# ---------------------------------------------------------------------------------------------
# reporting


def fmt(v, f="%.2f"):
    return "-" if v is None else f % v


def run_line(r):
    sb = r.get("split_brain") or []
    rto = ", ".join("never" if x is None else f"{x:.2f}" for x in r.get("rto", []))
    lost_past = r.get("lost_past_fork_max")
    return (f"  {r['scenario']} run {r['run']}: split brain {len(sb)}"
            + (f" (longest {max(w['seconds'] for w in sb):.2f}s, old primary's commits in it "
               f"{sum(w['old_commits_after'] for w in sb)}, via pgpilot "
               f"{sum(w['via_pgpilot'] for w in sb)})" if sb else "")
            + f", lost {fmt(r.get('lost'), '%d')} via pgpilot / {fmt(r.get('lost_direct'), '%d')}"
            f" direct" + (f" (up to {lost_past} bytes past the fork)" if lost_past else "")
            + f", relayed {relayed_text(r)}, RTO {rto or '-'} s, max gap "
            f"{fmt(r.get('max_gap'))} s, promoted "
            f"{'/'.join('yes' if p else 'no' for p in r.get('promoted', [])) or '-'}"
            + (f", rejoin {fmt(r['rejoin'], '%.1f')} s" if "rejoin" in r else "")
            + f": {', '.join(r['verdict']) or 'ok'}")


def relayed_text(r):
    """Results relayed from a deposed primary, and how many of those rows are lost."""
    n = r.get("relayed")
    if n is None:
        return "-"
    if n and r.get("relayed_lost") is not None:
        return f"{n} ({r['relayed_lost']} lost)"
    return str(n)


def known_sum(rs, key):
    """The sum of <key> over runs, saying in how many runs it could not be counted."""
    known = [r[key] for r in rs if r.get(key) is not None]
    unknown = len(rs) - len(known)
    return f"{sum(known)}" + (f" (not counted: {unknown})" if unknown else "")


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def report(results, args, binary):
    out = [f"bench-faults: pg_rto {args.pg_rto}, pg_rpo {args.pg_rpo}, binary {binary}", ""]
    summary = []
    for sc in SCENARIOS:
        rs = [r for r in results if r["scenario"] == sc.name]
        if not rs:
            continue
        out.append(f"### {sc.name}: {sc.doc}")
        out.append("")
        rows = []
        for r in rs:
            sb = r.get("split_brain") or []
            rows.append((r["run"], len(sb), fmt(max((w["seconds"] for w in sb), default=None)),
                         fmt(r.get("lost"), "%d"), fmt(r.get("lost_direct"), "%d"),
                         fmt(r.get("lost_past_fork_max"), "%d"), relayed_text(r),
                         " ".join("never" if x is None else f"{x:.2f}" for x in r.get("rto", []))
                         or "-", fmt(r.get("max_gap")),
                         "/".join("yes" if p else "no" for p in r.get("promoted", [])) or "-",
                         " ".join(fmt(f.get("promoted_after")) for f in r.get("faults", []))
                         or "-",
                         fmt(r.get("rejoin"), "%.1f") if "rejoin" in r else "-",
                         ", ".join(r["verdict"]) or "ok"))
        out.append(md_table(("run", "split brain", "longest s", "lost", "lost direct",
                             "bytes past fork", "relayed", "RTO s", "max gap s", "promoted",
                             "key+writable s", "rejoin s", "verdict"), rows))
        out.append("")
        rtos = [x for r in rs for x in r.get("rto", [])]
        got = sorted(x for x in rtos if x is not None)
        never = len(rtos) - len(got)
        proms = [p for r in rs for p in r.get("promoted", [])]
        forced = sum(1 for r in rs if r.get("split_brain") and "SPLIT-BRAIN" not in r["verdict"])
        summary.append((
            sc.name, len(rs), f"{sum(1 for r in rs if 'SPLIT-BRAIN' in r['verdict'])}"
            + (f" (+{forced} forced by the scenario)" if forced else ""),
            known_sum(rs, "lost"), known_sum(rs, "lost_direct"),
            sum(r.get("relayed") or 0 for r in rs),
            (f"{got[0]:.2f} / {statistics.median(got):.2f} / {got[-1]:.2f}" if got else "-")
            + (f" (never: {never})" if never else ""),
            fmt(max((r.get("max_gap") or 0 for r in rs), default=None)),
            f"yes {sum(proms)}, no {len(proms) - sum(proms)}"
            + (" (must be no)" if sc.promote is False else
               " (either is right)" if sc.promote is None else ""),
            f"{sum(1 for r in rs if not r['verdict'])}/{len(rs)}"))
    out.append("### summary")
    out.append("")
    out.append(md_table(("scenario", "runs", "split brain (runs)", "lost via pgpilot",
                         "lost direct", "relayed", "RTO s min / median / max", "max gap s",
                         "promoted", "ok runs"), summary))
    out.append("")
    out.append(f"targets: 0 split brain, 0 lost via pgpilot, 0 relayed, RTO <= pg_rto "
               f"({args.pg_rto} s) in every run, no promotion where the RPO rule forbids one, "
               f"a single primary at the end")
    return "\n".join(out)


def binary_desc():
    b = C.PGPILOT_BIN
    try:
        st = os.stat(b)
    except OSError:
        return b
    desc = f"{b} (built {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st.st_mtime))}"
    if os.path.dirname(os.path.abspath(b)) != REPO:
        return desc + ")"
    try:
        head = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h %s"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        desc += f", tree at {head[:60]}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    return desc + ")"


def main(argv=None):
    ap = argparse.ArgumentParser(description="HA fault scenarios against a three-node cluster")
    ap.add_argument("--scenario", action="append", choices=sorted(BY_NAME) + ["all"],
                    help="scenario to run (repeatable; default all)")
    ap.add_argument("--runs", type=int, default=None,
                    help="runs per scenario (default 20 for findings 1-4, 5 for the others)")
    ap.add_argument("--quick", action="store_true", help="one run per scenario")
    ap.add_argument("--pg-rto", type=int, default=10, help="pg_rto in seconds (10)")
    ap.add_argument("--pg-rpo", type=int, default=1048576, help="pg_rpo in bytes (1048576)")
    ap.add_argument("--observe", type=float, default=5.0,
                    help="seconds to keep writing after the cluster settled (5)")
    ap.add_argument("--json", help="write every run's results to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args(argv)
    if args.list:
        for sc in SCENARIOS:
            print(f"{sc.name:22} {'finding ' + str(sc.finding) if sc.finding else 'holds':10} "
                  f"{sc.doc}")
        return 0
    names = args.scenario or ["all"]
    chosen = SCENARIOS if "all" in names else [BY_NAME[n] for n in dict.fromkeys(names)]
    if not os.access(C.PGPILOT_BIN, os.X_OK):
        print(f"bench-faults: {C.PGPILOT_BIN} is missing (run make)", file=sys.stderr)
        return 1
    binary = binary_desc()
    lines = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    log(f"bench-faults with {binary}")
    results, status = [], 0
    with pgcluster.ProcessGroup() as group:
        try:
            for sc in chosen:
                runs = 1 if args.quick else (args.runs or (20 if sc.finding else 5))
                for n in range(1, runs + 1):
                    log(f"{sc.name} run {n}/{runs}: fresh cluster (pg_rto {args.pg_rto})")
                    r = one_run(sc, n, args, group, log)
                    results.append(r)
                    log(run_line(r))
                    if r.get("error"):
                        status = 1
        except KeyboardInterrupt:
            log("interrupted")
            status = 130
    text = report(results, args, binary)
    print("\n" + text)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, time.strftime("faults-%Y%m%d-%H%M%S.txt"))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n\n" + text + "\n")
    print(f"\nresults written to {path}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"binary": binary, "pg_rto": args.pg_rto, "pg_rpo": args.pg_rpo,
                       "runs": results}, f, indent=1, default=str)
    return status


if __name__ == "__main__":
    sys.exit(main())
