"""Issue 9 finding 4: the primary's agent hangs (SIGSTOP of its pgpilot alone) or dies (kill -9
of its pgpilot alone) while its PostgreSQL keeps running.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

Three nodes, pg_rto 10. A writer runs through every pgpilot and one directly on every node
(the direct ones show what the databases did, the others what pgpilot let through). Nothing
but the fence guard (ha/fence_guard.c) can stop the old primary while its agent cannot run:
it must stop it before the lease expires, so that a replica is promoted within pg_rto and no
two nodes accept commits at the same time. Without the guard, either nobody is promoted for as
long as the agent hangs (or for ever after a kill -9: the RTO check fails), or a peer whose probe
of the old primary timed out promotes while the old primary still commits (split brain).
"""

import os
import re
import signal
import sys
import time
from datetime import datetime

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster as C  # noqa: E402

PG_RTO = 10
T = C.timings(PG_RTO)
HANG_S = 25

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not os.access(C.PGPILOT_BIN, os.X_OK), reason="no ./pgpilot")]


class Direct:
    """Stands in for a Pilot in C.Writer: connections straight to one node."""

    def __init__(self, node):
        self.node = node

    def connect(self, **kw):
        return self.node.connect(dbname=C.APP_DB, user="postgres", connect_timeout=2, **kw)


@pytest.fixture
def ha(request):
    yield from C.cluster_fixture(request, n=3, pg_rto=PG_RTO)


GUARD_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \[\d+\] \w+ fence guard: "
                      r"no feed before the deadline \((-?\d+) ms late\)", re.M)


def guard_fired(pilot):
    """(wall clock time, ms after the deadline) of the first time the guard stopped PostgreSQL,
    from the pgpilot log (the guard writes to the stderr it inherited), or None."""
    m = GUARD_RE.search(pilot.log)
    if not m:
        return None
    t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return t, int(m.group(2))


@pytest.mark.parametrize("fault", ["sigstop", "kill9"])
def test_leader_agent_hang(ha, fault):
    """SIGSTOP (for 25 s) or kill -9 of the leader's pgpilot alone: its fence guard stops the
    old primary before the lease expires; no two nodes commit in overlapping time; a write
    through a surviving pgpilot commits on the new primary within pg_rto of the fault; every
    acknowledged commit is on the final primary."""
    old = ha.members[0]
    port_member = {ha.nodes[m].port: m for m in ha.members}
    writers = [C.Writer(ha.pilots[m], f"p-{m}", interval=0.02, reconnect=True)
               for m in ha.members]
    writers += [C.Writer(Direct(ha.nodes[m]), f"d-{m}", interval=0.05, reconnect=True)
                for m in ha.members]
    for w in writers:
        w.start()
    pilot_pid = ha.pilots[old].proc.pid
    new, dt = None, None
    try:
        C.wait_for(lambda: all(len(w.acks) >= 10 for w in writers[:3]), 30, 0.05,
                   "every pgpilot writer to commit")
        t_fault = time.time()
        if fault == "sigstop":
            os.kill(pilot_pid, signal.SIGSTOP)
        else:
            ha.pilots[old].kill9()
        try:
            new, _ = ha.wait_new_primary(old, timeout=HANG_S - 2)
            dt = time.time() - t_fault
        except AssertionError:
            new = None
        if fault == "sigstop":
            time.sleep(max(0.0, t_fault + HANG_S - time.time()))
            os.kill(pilot_pid, signal.SIGCONT)
        if new is None:
            try:
                new, _ = ha.wait_new_primary(old, timeout=20)
                dt = time.time() - t_fault
            except AssertionError:
                new = None
        # settle: one primary, the writers through the surviving pgpilots on it
        if new:
            C.wait_for(lambda: ha.pg_primaries() == [new], 60, 0.2,
                       f"{new} to be the only primary")
            C.wait_for(lambda: all(w.first_ack_after(time.time() - 0.5) for w in writers[1:3]),
                       30, 0.1, "the surviving pgpilots' writers to commit")
        time.sleep(1.0)
    finally:
        for w in writers:
            w.stop(timeout=10)

    old_port = ha.nodes[old].port
    acks = [(w.wname, a) for w in writers for a in w.acks]
    pilot_acks = [a for name, a in acks if name.startswith("p-")]
    fired = guard_fired(ha.pilots[old])
    # RTO: the first ack through a surviving pgpilot on another node after the fault
    rto = min((a[2] for a in pilot_acks if a[2] > t_fault and a[3] != old_port), default=None)
    rto = None if rto is None else rto - t_fault
    # split brain: the old primary committed (server clock) after the new one's first commit
    new_port = ha.nodes[new].port if new else None
    first_new = min((a[5] for _, a in acks if a[3] == new_port), default=None)
    last_old = max((a[5] for _, a in acks if a[3] == old_port), default=t_fault)
    overlap = None if first_new is None else last_old - first_new
    # every acknowledged commit on the final primary
    final = ha.pg_primary()
    lost = []
    if final:
        present = C.rows_present(ha.nodes[final], [w.wname for w in writers])
        lost = [(name, a[0], port_member.get(a[3])) for name, a in acks
                if (name, a[0]) not in present]
    sys.stderr.write(
        f"\n{fault}: new primary {new}"
        f"{'' if new is None else f' (seen {dt:.2f}s after the fault)'}; RTO through pgpilot "
        f"{'none' if rto is None else f'{rto:.2f}s'}; guard "
        + ("did not fire" if not fired else
           f"fired {fired[0] - t_fault:+.2f}s after the fault, {fired[1]} ms after its "
           f"deadline (L - M = {T['L'] - 1:.1f}s after the last feed)")
        + f"; old primary's last commit {last_old - t_fault:+.2f}s"
        + ("" if overlap is None else f", {overlap:+.2f}s after the new primary's first")
        + f"; acked {len(acks)} ({len(pilot_acks)} through pgpilot), lost {len(lost)} "
        f"{lost[:5]}\n")
    assert new is not None, "no replica was promoted while the leader's agent could not run"
    assert overlap < 0, \
        f"split brain: {old} committed {overlap:.2f}s after the new primary's first commit"
    assert rto is not None and rto <= PG_RTO, \
        f"writes through the surviving pgpilots were unavailable for {rto} s > pg_rto"
    assert not lost, f"acknowledged commits missing on the final primary {final}: {lost[:10]}"
    assert fired, "the fence guard did not stop the old primary"
    assert fired[0] - t_fault < T["L"], "the guard fired after the lease could have expired"


def test_agent_restarted_keeps_primary(ha):
    """kill -9 of the leader's pgpilot, started again at once: the new agent takes the armed
    guard over (and the leader key, TAKEOVER), feeds it, and its PostgreSQL stays the primary:
    the guard does not fire, nobody else is promoted, writes through it go on."""
    old = ha.members[0]
    pm_before = ha.nodes[old].postmaster_pid()
    ha.pilots[old].kill9()
    t_kill = time.time()
    ha.pilots[old].start()
    C.wait_for(lambda: "took over the armed fence guard" in ha.pilots[old].log, 10, 0.1,
               "the restarted agent to take the guard over")
    took = time.time() - t_kill
    time.sleep(T["L"] + 3)  # past the old deadline and the old lease
    w = C.Writer(ha.pilots[old], "after-restart", interval=0.02)
    w.start()
    try:
        C.wait_for(lambda: len(w.acks) >= 5, 15, 0.05, "writes through the restarted pgpilot")
    finally:
        w.stop(timeout=10)
    sys.stderr.write(f"\nrestart: guard taken over {took:.2f}s after the kill -9\n")
    assert guard_fired(ha.pilots[old]) is None, "the guard stopped the primary of a live agent"
    assert ha.nodes[old].postmaster_pid() == pm_before, "the old primary was restarted"
    assert ha.pg_primaries() == [old]
    assert ha.etcd_leader() == old
    assert all(a[3] == ha.nodes[old].port for a in w.acks)
