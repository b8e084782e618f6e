"""HA: etcd itself stops and comes back.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

An etcd outage shorter than the leader's retry budget must not cause a failover or touch clients
(routing keeps following the last known leader); afterwards the agents' watches resume, shown by a
later failover that still happens within pg_rto.
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


def test_etcd_restart_no_failover_watch_resumes(ha):
    """etcd stopped (SIGTERM) and started again on the same data within about a second: the
    same primary stays, no replica is promoted, the writers through every pgpilot see no error
    and keep their connections; then killing the primary's node still fails over within
    pg_rto, so the agents follow etcd again."""
    old = ha.members[0]
    writers = {m: C.Writer(ha.pilots[m], f"w-{m}", interval=0.03) for m in ha.members}
    for w in writers.values():
        w.start()
    try:
        C.wait_for(lambda: all(len(w.acks) >= 5 for w in writers.values()), 20, 0.05,
                   "every writer to commit")
        t0 = time.monotonic()
        ha.etcd.stop()
        time.sleep(0.5)
        ha.etcd.start()
        outage = time.monotonic() - t0
        time.sleep(T["R"] + T["T"] + 1)  # past the point where a leader that lost etcd fences
        n = {m: len(w.acks) for m, w in writers.items()}
        C.wait_for(lambda: all(len(w.acks) > n[m] + 5 for m, w in writers.items()), 10, 0.05,
                   "writes after the etcd restart")
        assert ha.etcd_leader() == old
        assert ha.pg_primaries() == [old]
        for m, w in writers.items():
            assert w.errors == [], f"writer through {m} got errors: {w.errors}"
            assert w.lost_connection is None
        ha_rows = ha.pilots[ha.members[1]].show_ha()
        sys.stderr.write(f"\netcd outage {outage:.2f}s; SHOW HA after: {ha_rows}\n")
        watch = {k: v for k, v in ha_rows.items() if "watch" in k.lower()}
        if watch:
            assert not any("down" in str(v).lower() or "fail" in str(v).lower()
                           for v in watch.values()), watch
    finally:
        for w in writers.values():
            w.stop(timeout=10)
    ha.kill_node(old)
    new, dt = ha.wait_new_primary(old, timeout=PG_RTO + 15)
    sys.stderr.write(f"failover after the etcd restart: {new} in {dt:.2f}s\n")
    assert dt <= PG_RTO
