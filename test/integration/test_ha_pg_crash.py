"""HA rule 7: only the primary's PostgreSQL dies; its pgpilot lives.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

Restartable: the agent restarts it in place and keeps the leader key (no failover). Not
restartable (the data dir made unusable): the agent releases the key once the restart budget S
is spent, so a replica takes over well before the lease would have expired.
"""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster as C  # noqa: E402

PG_RTO = 10
T = C.timings(PG_RTO)

pytestmark = [pytest.mark.timeout(150),
              pytest.mark.skipif(not os.access(C.PGPILOT_BIN, os.X_OK), reason="no ./pgpilot")]


@pytest.fixture
def ha(request):
    yield from C.cluster_fixture(request, n=3, pg_rto=PG_RTO)


def test_crashed_primary_restarted_in_place(ha):
    """kill -9 of the primary's PostgreSQL only: its agent starts it again on the same data dir
    within the restart budget, the leader key never moves, no replica is promoted, and a client
    of a replica's pgpilot commits on the same node afterwards without reconnecting."""
    old, via = ha.members[0], ha.members[1]
    w = C.Writer(ha.pilots[via], "w1", interval=0.05)
    w.start()
    try:
        C.wait_for(lambda: len(w.acks) >= 10, 20, 0.05, "first writes")
        pid0 = ha.nodes[old].postmaster_pid()
        t_kill = time.time()
        ha.kill_pg(old)
        leaders = set()

        def back():
            leaders.add(ha.etcd_leader())
            pid = ha.nodes[old].postmaster_pid()
            return pid and pid != pid0 and ha.nodes[old].in_recovery() is False
        C.wait_for(back, T["R"] + T["S"] + 8, 0.05, f"{old}'s PostgreSQL to be restarted")
        t_back = time.time() - t_kill
        first = C.wait_for(lambda: w.first_ack_after(t_kill + t_back), 15, 0.05,
                           "a commit after the restart")
        for _ in range(20):  # a few more seconds: nobody else takes over
            leaders.add(ha.etcd_leader())
            time.sleep(0.1)
    finally:
        w.stop()
    sys.stderr.write(f"\nrestarted in place after {t_back:.2f}s; writer errors {w.errors}\n")
    assert leaders == {old}, f"leader key moved or vanished: {leaders}"
    assert ha.pg_primaries() == [old]
    assert first[3] == ha.nodes[old].port
    assert w.lost_connection is None and w.reconnects == 0, w.lost_connection
    assert all((e[2] or "").startswith("08") for e in w.errors), w.errors


def test_unrestartable_primary_releases_lease(ha):
    """kill -9 of the primary's PostgreSQL while its data dir has permissions PostgreSQL refuses
    (0777), so every restart fails: the agent releases the leader key after the restart budget S
    instead of waiting for the lease to expire, and a replica is primary well before pg_rto
    (bound: R + S + P + X + 1 s, below the lease TTL path)."""
    old = ha.members[0]
    data = ha.nodes[old].datadir
    off = ha.pilots[old].log_size()
    os.chmod(data, 0o777)  # a running postmaster does not care; a new one refuses to start
    try:
        t0 = time.monotonic()
        ha.kill_pg(old)
        new, dt = ha.wait_new_primary(old, timeout=PG_RTO + 15)
        assert ha.pilots[old].running(), "the old primary's pgpilot died"
    finally:
        os.chmod(data, 0o700)
    bound = T["R"] + T["S"] + T["P"] + T["X"] + 1.0
    sys.stderr.write(f"\nreleased and failed over after {dt:.2f}s (bound {bound:.2f}s, lease "
                     f"{T['L']:.0f}s)\n")
    assert dt <= bound, f"failover after {dt:.2f}s: the key was not released early\n" + \
        ha.pilots[old].log_since(off)[-4000:]
    assert dt < T["L"], "no faster than a lease expiry"
    assert time.monotonic() - t0 < PG_RTO
    log = ha.pilots[old].log_since(off)
    assert "releas" in log.lower(), "the old primary's agent did not log a release:\n" + log[-4000:]
