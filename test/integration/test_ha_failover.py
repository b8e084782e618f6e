"""HA: the primary's node dies (PostgreSQL and its pgpilot, SIGKILL), and the old primary rejoins.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

Each test has its own three-node cluster (cluster.py) at pg_rto = 10 s: etcd, PostgreSQL 15 on
127.0.0.11-13, one pgpilot agent per node.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster as C  # noqa: E402

PG_RTO = 10
PG_RPO = 1048576

pytestmark = [pytest.mark.timeout(150),
              pytest.mark.skipif(not os.access(C.PGPILOT_BIN, os.X_OK), reason="no ./pgpilot")]


@pytest.fixture
def ha(request):
    yield from C.cluster_fixture(request, n=3, pg_rto=PG_RTO, pg_rpo=PG_RPO)


def bytes_per_row(ha, primary, writer, rows=40):
    """WAL bytes the writer's inserts cost, measured on the primary (upper bound: everything
    else written meanwhile counts too)."""
    n0, l0 = len(writer.acks), C.wal_bytes(ha.nodes[primary])
    C.wait_for(lambda: len(writer.acks) >= n0 + rows, 20, 0.05, f"{rows} acknowledged writes")
    n1, l1 = len(writer.acks), C.wal_bytes(ha.nodes[primary])
    return max(1.0, (l1 - l0) / max(1, n1 - n0))


def test_node_death_fails_over_within_pg_rto(ha):
    """kill -9 of the primary's PostgreSQL and its pgpilot together: a replica is promoted
    within pg_rto; a client connected through a surviving pgpilot keeps its connection (its
    in-flight transaction may fail with 08006) and commits again without reconnecting; the
    acknowledged commits missing on the new primary stay within pg_rpo."""
    old, via = ha.members[0], ha.members[1]
    assert ha.etcd_leader() == old
    assert ha.shown_leader(via) == old, ha.pilots[via].show_cluster()
    old_port = ha.nodes[old].port
    w = C.Writer(ha.pilots[via], "w1", interval=0.02)
    w.start()
    try:
        C.wait_for(lambda: len(w.acks) >= 20, 20, 0.05, "first writes through pgpilot")
        assert all(a[3] == old_port for a in w.acks), "writes through pgpilot not on the primary"
        bpr = bytes_per_row(ha, old, w)
        t_kill = C.time.time()
        ha.kill_node(old)
        new, dt = ha.wait_new_primary(old, timeout=PG_RTO + 15)
        new_port = ha.nodes[new].port
        first = C.wait_for(lambda: next((a for a in w.acks if a[2] > t_kill and a[3] == new_port),
                                        None), PG_RTO + 15, 0.05,
                           "the writer's first commit on the new primary")
        n_after = len(w.acks)
        C.wait_for(lambda: len(w.acks) >= n_after + 20, 20, 0.05, "writes after the failover")
    finally:
        w.stop()
    rto = first[2] - t_kill
    sys.stderr.write(f"\nfailover: new primary {new} after {dt:.2f}s (key + out of recovery), "
                     f"first commit through {via} after {rto:.2f}s; errors {w.errors}\n")
    assert w.lost_connection is None, f"client connection lost: {w.lost_connection}"
    assert w.reconnects == 0
    assert dt <= PG_RTO, f"new primary after {dt:.2f}s > pg_rto {PG_RTO}s"
    assert rto <= PG_RTO + 1, f"first commit {rto:.2f}s after the kill"
    bad = [e for e in w.errors if not (e[2] or "").startswith("08")]
    assert not bad, f"errors other than connection failure (08xxx): {bad}"
    assert len(w.errors) <= 2, w.errors
    assert all(a[3] == new_port for a in w.acks if a[1] > first[2]), \
        "a write after the failover went elsewhere than the new primary"
    # RPO: acknowledged commits that the new primary does not have
    present = C.rows_present(ha.nodes[new], ["w1"])
    lost = w.acked_keys() - present
    sys.stderr.write(f"acknowledged {len(w.acks)}, lost {len(lost)} (~{len(lost) * bpr:.0f} WAL "
                     f"bytes at {bpr:.0f} bytes/row)\n")
    assert len(lost) * bpr <= PG_RPO, f"{len(lost)} acknowledged rows lost"
    # the other replica follows the new primary
    third = [m for m in ha.members if m not in (old, new)][0]
    C.wait_for(lambda: (ha.nodes[third].wal_receiver() or (None, None, None))[2] == new_port,
               PG_RTO + 10, 0.2, f"{third} to stream from {new}")


def test_prepared_statements_survive_failover(ha):
    """A client whose statements are named prepared statements (psycopg prepare_threshold=0)
    keeps working after the failover: pgpilot prepares them again on the new primary, so the
    client commits there without reconnecting and without 'prepared statement does not
    exist'."""
    old, via = ha.members[0], ha.members[1]
    w = C.Writer(ha.pilots[via], "wp", interval=0.02, prepare=True)
    w.start()
    try:
        C.wait_for(lambda: len(w.acks) >= 20, 20, 0.05, "first prepared writes")
        t_kill = C.time.time()
        ha.kill_node(old)
        new, dt = ha.wait_new_primary(old, timeout=PG_RTO + 15)
        port = ha.nodes[new].port
        C.wait_for(lambda: next((a for a in w.acks if a[2] > t_kill and a[3] == port), None),
                   PG_RTO + 10, 0.05,
                   f"a prepared insert to commit on the new primary (errors: {w.errors[-3:]})")
    finally:
        w.stop()
    assert w.lost_connection is None and w.reconnects == 0, w.lost_connection
    assert not [e for e in w.errors if e[2] == "26000"], \
        f"prepared statement missing on the new server: {w.errors[-3:]}"


def test_old_primary_rejoins_as_replica(ha):
    """After a failover, the former primary's pgpilot restarted on the same data dir brings its
    PostgreSQL back as a replica of the new primary (pg_rewind if it diverged): in recovery,
    streaming from the new primary, and it receives rows written afterwards."""
    old = ha.members[0]
    # some writes first, so the killed primary may hold WAL the others never got
    with ha.nodes[old].connect(dbname=C.APP_DB) as c:
        c.execute("INSERT INTO writes (writer, seq) SELECT 'pre', g FROM generate_series(1, 500) g")
    ha.kill_node(old)
    new, dt = ha.wait_new_primary(old, timeout=PG_RTO + 15)
    new_port = ha.nodes[new].port
    ha.pilots[old].start()
    C.wait_for(lambda: ha.nodes[old].in_recovery() is True, 60, 0.2,
               f"{old} to run again in recovery")
    C.wait_for(lambda: (ha.nodes[old].wal_receiver() or (None, None, None))[0] == "streaming"
               and ha.nodes[old].wal_receiver()[2] == new_port, 60, 0.2,
               f"{old} to stream from the new primary {new} (receiver: "
               f"{ha.nodes[old].wal_receiver()})")
    with ha.nodes[new].connect(dbname=C.APP_DB) as c:
        c.execute("INSERT INTO writes (writer, seq) VALUES ('after-rejoin', 1)")
    C.wait_for(lambda: ha.nodes[old].query("SELECT count(*) FROM writes WHERE writer = "
                                           "'after-rejoin'", dbname=C.APP_DB)[0][0] == 1,
               10, 0.2, "the row written on the new primary to reach the rejoined node")
    assert ha.etcd_leader() == new
    assert ha.pg_primaries() == [new]
    C.wait_for(lambda: old in ha.etcd_members(), 20, 0.2, f"{old}'s member key")
