"""HA rule 2 (fence before expiry): the primary's pgpilot is cut off from etcd.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

Each pgpilot reaches etcd through its own TCP proxy (cluster.TcpProxy). Cutting the primary's
proxy either closes it (connections refused/reset) or turns it into a black hole (requests hang).
A writer runs through every pgpilot and records, for every acknowledged commit, the node that
ran it (inet_server_port()) and the times; no two nodes may accept writes in the same period.
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
    yield from C.cluster_fixture(request, n=3, pg_rto=PG_RTO, proxies=True)


@pytest.mark.parametrize("cut", ["stop", "blackhole"])
def test_primary_cut_off_from_etcd_fences(ha, cut):
    """The primary's pgpilot loses etcd (proxy stopped, or black-holed): it stops writes on its
    node before its lease can expire (R + T + F + 1 s <= L), a replica is promoted after the
    expiry, and no commit on the old primary is acknowledged after the first commit on the new
    one. The writers through the other pgpilots keep their connections."""
    old = ha.members[0]
    writers = {m: C.Writer(ha.pilots[m], f"w-{m}", interval=0.02) for m in ha.members}
    for w in writers.values():
        w.start()
    try:
        C.wait_for(lambda: all(len(w.acks) >= 10 for w in writers.values()), 20, 0.05,
                   "every writer to commit")
        t_cut = time.time()
        ha.proxies[old].cut(cut)
        new, dt = ha.wait_new_primary(old, timeout=PG_RTO + 15)
        new_port = ha.nodes[new].port
        C.wait_for(lambda: all(w.first_ack_after(t_cut + dt) for m, w in writers.items()
                               if m != old), PG_RTO + 10, 0.05,
                   "the writers of the connected pgpilots to commit on the new primary")
        time.sleep(1.0)
        old_state = ha.nodes[old].in_recovery()
    finally:
        for w in writers.values():
            w.stop(timeout=10)
    old_port = ha.nodes[old].port
    acks = [(m, a) for m, w in writers.items() for a in w.acks]
    old_after_cut = [a for m, a in acks if a[3] == old_port and a[2] > t_cut]
    new_acks = [a for m, a in acks if a[3] == new_port]
    assert new_acks, "no commit on the new primary"
    last_old_ack = max((a[2] for a in old_after_cut), default=t_cut)
    first_new_commit = min(a[5] for a in new_acks)  # server clock inside the transaction
    sys.stderr.write(f"\ncut={cut}: last write acknowledged by the old primary "
                     f"{last_old_ack - t_cut:+.2f}s after the cut, new primary {new} after "
                     f"{dt:.2f}s, first commit there {first_new_commit - t_cut:+.2f}s; "
                     f"old primary in recovery now: {old_state}\n")
    assert last_old_ack < first_new_commit, \
        "two nodes accepted writes in the same period (split brain)"
    assert last_old_ack - t_cut < T["L"], "the old primary took writes until its lease expired"
    assert old_state is not False, "the cut-off primary is still a writable primary"
    for m, w in writers.items():
        if m != old:
            assert w.lost_connection is None and w.reconnects == 0, (m, w.lost_connection)
    assert dt <= PG_RTO + 1
