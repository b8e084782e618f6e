"""HA: no pgpilot relays a result from a deposed primary.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

Three nodes (cluster.py) at pg_rto = 10 s. Writers go through the pgpilots of the two replicas
(database app, role=primary, transaction pooling), each an autocommit INSERT ... RETURNING
inet_server_port() every 20 ms, so every ack says which node gave it. The primary's whole node
is paused with SIGSTOP (a VM pause): the writers' INSERTs hang on server connections to it, a
replica is promoted, and the pgpilots learn the new leader. When the old node wakes it would
commit what it had in flight and answer; a pgpilot must have closed those server connections
when the leader changed and told the waiting clients that the outcome is unknown (08007),
keeping them connected, so that no result of the deposed primary reaches a client after the new
primary's first commit.
"""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster as C  # noqa: E402
from test_ha_rewind import pause_node, resume_node  # noqa: E402

PG_RTO = 10

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not os.access(C.PGPILOT_BIN, os.X_OK), reason="no ./pgpilot")]


@pytest.fixture
def ha(request):
    yield from C.cluster_fixture(request, n=3, pg_rto=PG_RTO)


def test_no_result_relayed_from_deposed_primary(ha):
    """Pause the primary's node with writers in flight through the surviving pgpilots; after
    the new primary's first commit no ack comes from the old primary, every writer got 08007
    for its request in flight and kept its connection, and the writers go on on the new
    primary."""
    old = ha.members[0]
    old_port = ha.nodes[old].port
    writers = [C.Writer(ha.pilots[m], f"via-{m}-{i}", interval=0.02, reconnect=True)
               for m in ha.members[1:] for i in range(2)]
    for w in writers:
        w.start()
    try:
        C.wait_for(lambda: all(sum(1 for a in w.acks if a[3] == old_port) >= 10
                               for w in writers), 30, 0.05,
                   f"writes through every surviving pgpilot to {old} "
                   f"(errors: {[w.errors[-2:] for w in writers]})")
        pids = pause_node(ha, old)
        try:
            new, _ = ha.wait_new_primary(old, timeout=PG_RTO + 25)
            new_node = ha.nodes[new]
            # the new primary's first commit (wall clock of its ack: same host as the writers)
            new_node.query("INSERT INTO writes (writer, seq) VALUES ('first-on-new', 1)",
                           dbname=C.APP_DB)
            t_new_commit = time.time()
            # every surviving pgpilot has had time to see the new leader in etcd
            C.wait_for(lambda: all(f"leader changed: {old} -> " in ha.pilots[m].log
                                   for m in ha.members[1:]), 20, 0.1,
                       f"the surviving pgpilots to see that {old} lost the leader key")
            time.sleep(2)
        finally:
            resume_node(pids)
        t_wake = time.time()
        # the writers carry on through the pgpilots on the new primary
        C.wait_for(lambda: all(any(a[3] == new_node.port and a[2] > t_wake for a in w.acks)
                               for w in writers), 60, 0.1,
                   f"every writer to commit on {new} after the wake "
                   f"(errors: {[w.errors[-2:] for w in writers]})")
        time.sleep(2)  # any late answer of the old primary would have come by now
    finally:
        for w in writers:
            w.stop()

    relayed = [(w.wname, a) for w in writers for a in w.acks
               if a[3] == old_port and a[2] > t_new_commit]
    assert not relayed, (f"{len(relayed)} results of the deposed primary {old} were relayed "
                         f"after {new}'s first commit: {relayed[:5]}")
    for w in writers:
        unknown = [e for e in w.errors if e[2] == "08007"]
        assert unknown, f"{w.wname}: no 08007 for its request in flight: {w.errors[-5:]}"
        assert "deposed" in unknown[0][3] and "outcome is unknown" in unknown[0][3], unknown[0]
        assert w.lost_connection is None and w.reconnects == 0, \
            f"{w.wname}: the client connection was not kept: {w.lost_connection} {w.errors[-3:]}"
    # what the pgpilots logged
    for m in ha.members[1:]:
        assert f'the primary "{old}" was deposed (leader now: ' in ha.pilots[m].log
