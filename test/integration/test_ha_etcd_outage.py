"""HA: etcd is down long enough for the primary to fence, then comes back on its data dir.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

etcd keeps leases across a restart and gives each a fresh TTL. A leader that fenced during the
outage must not keep its old lease alive: the leader key on it would never expire and no node
would be primary again (issue 9, finding 1). Nobody touches an agent here: a writable primary
(an INSERT through a pgpilot commits) must be there within pg_rto of etcd's return. The agents
log etcd's unreachability once, then a summary at intervals, not one line per failed request.
A key left by an earlier run of an agent on its dead lease is revoked by the next run rather
than waited for.
"""

import os
import re
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster as C  # noqa: E402

PG_RTO = 10
T = C.timings(PG_RTO)
SUMMARY_EVERY = 10  # seconds between "etcd still unreachable" summaries (ha/etcd.c)
UNREACHABLE = re.compile(r"could not reach etcd|unreachable", re.IGNORECASE)

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not os.access(C.PGPILOT_BIN, os.X_OK), reason="no ./pgpilot")]


@pytest.fixture
def ha(request):
    yield from C.cluster_fixture(request, n=3, pg_rto=PG_RTO)


def unreachable_lines(text):
    """Log lines (DEBUG excluded) that say etcd could not be reached."""
    return [ln for ln in text.splitlines() if UNREACHABLE.search(ln) and "DEBUG" not in ln]


@pytest.mark.parametrize("outage", [5, 3 * PG_RTO], ids=["5s", "3x_pg_rto"])
def test_etcd_outage_primary_again_within_pg_rto(ha, outage):
    """etcd stopped with SIGTERM for <outage> seconds (longer than the leader's retry budget
    R + T, so the primary fences), then started on the same data dir. Within pg_rto of its
    return an INSERT through a pgpilot commits, with no agent restarted; exactly one node is
    a primary afterwards; during the outage each agent logged at most a few lines about etcd
    being unreachable (the change, one summary per interval, the return)."""
    assert outage > T["R"] + T["T"]
    writers = {m: C.Writer(ha.pilots[m], f"w-{m}", interval=0.05, reconnect=True)
               for m in ha.members}
    for w in writers.values():
        w.start()
    offsets = {m: ha.pilots[m].log_size() for m in ha.members}
    try:
        C.wait_for(lambda: all(len(w.acks) >= 3 for w in writers.values()), 20, 0.05,
                   "every writer to commit")
        ha.etcd.stop()
        time.sleep(outage)
        back = time.time()  # etcd's own start-up counts against pg_rto too
        ha.etcd.start()

        def first_commit():
            acks = [a for w in writers.values() if (a := w.first_ack_after(back))]
            return min(acks, key=lambda a: a[2]) if acks else None
        ack = C.wait_for(first_commit, PG_RTO + 30, 0.05,
                         "an INSERT through a pgpilot to commit after etcd's return")
        dt = ack[2] - back
        sys.stderr.write(f"\netcd down {outage}s: first commit {dt:.2f}s after its return, "
                         f"on {ack[4]}:{ack[3]}\n")
        assert dt <= PG_RTO, f"no writable primary within pg_rto ({dt:.2f}s)"
        time.sleep(2)
    finally:
        for w in writers.values():
            w.stop(timeout=10)
    C.wait_for(lambda: len(ha.pg_primaries()) == 1 and ha.etcd_leader() in ha.pg_primaries(),
               PG_RTO, 0.1, "one primary holding the leader key")
    old = ha.pilots[ha.members[0]].log_since(offsets[ha.members[0]])
    assert "fencing" in old, "the primary did not fence during the outage"
    bound = 2 + outage // SUMMARY_EVERY
    for m in ha.members:
        assert ha.pilots[m].running(), f"pgpilot {m} died"
        lines = unreachable_lines(ha.pilots[m].log_since(offsets[m]))
        sys.stderr.write(f"{m}: {len(lines)} 'unreachable' lines\n")
        assert len(lines) <= bound, (f"{m} logged {len(lines)} lines about etcd being "
                                     f"unreachable (bound {bound}):\n" + "\n".join(lines[:20]))


def test_key_of_an_earlier_run_is_revoked(ha):
    """The primary's node dies (agent and PostgreSQL SIGKILLed) and its agent alone is started
    again at once, its PostgreSQL still down: the leader key names this member on the dead
    agent's lease, so the new agent revokes that lease (best effort) instead of waiting for it
    to expire, and another member becomes primary."""
    old = ha.members[0]
    lease_before = ha.etcd._post("/v3/kv/range", {"key": ha.etcd._b64(
        f"{C.NAMESPACE}/{C.CLUSTER_NAME}/leader")})["kvs"][0]["lease"]
    ha.kill_node(old)
    offset = ha.pilots[old].log_size()
    t0 = time.monotonic()
    ha.pilots[old].start()
    new, dt = ha.wait_new_primary(old, timeout=PG_RTO + 20)
    since = time.monotonic() - t0
    log = ha.pilots[old].log_since(offset)
    sys.stderr.write(f"\nagent restarted, PostgreSQL down: new primary {new} {since:.2f}s later\n")
    assert f"revoking lease {lease_before} of an earlier run" in log, log[-3000:]
