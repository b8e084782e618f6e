"""HA rule 4 (RPO): a replica more than pg_rpo bytes behind the published optime is never
promoted; with every replica that far behind there is no automatic failover, and the operator
surfaces say why.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

A replica is made to lag by pausing its replay (pg_wal_replay_pause) and stopping its WAL
receiver process with SIGSTOP (receiving would otherwise go on, and the rule counts
max(receive, replay)); then more than pg_rpo bytes of WAL are written on the primary and we wait
until the leader has published that position in status.optime.
"""

import json
import os
import signal
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster as C  # noqa: E402

PG_RTO = 10
PG_RPO = 1048576

pytestmark = [pytest.mark.timeout(150),
              pytest.mark.skipif(not os.access(C.PGPILOT_BIN, os.X_OK), reason="no ./pgpilot")]


@pytest.fixture
def ha(request):
    frozen = []
    gen = C.cluster_fixture(request, n=3, pg_rto=PG_RTO, pg_rpo=PG_RPO)
    c = next(gen)
    c.frozen = frozen
    yield c
    C.kill_pids(frozen, signal.SIGCONT)
    with pytest.raises(StopIteration):
        next(gen)


def make_lag(ha, member):
    """Pause replay and freeze the WAL receiver of <member>; returns the receiver PID."""
    node = ha.nodes[member]
    pid = C.wait_for(lambda: node.query("SELECT pid FROM pg_stat_wal_receiver")[0][0], 10, 0.1,
                     f"{member}'s WAL receiver")
    node.query("SELECT pg_wal_replay_pause()")
    os.kill(pid, signal.SIGSTOP)
    ha.frozen.append(pid)
    return pid


def status_optime(ha):
    raw = ha.etcd.get(f"{C.NAMESPACE}/{C.CLUSTER_NAME}/status")
    if not raw:
        return None
    v = json.loads(raw).get("optime")
    return C.lsn_int(v) if isinstance(v, str) and "/" in v else int(v)


def write_beyond_rpo(ha, primary):
    """Write about 4 x pg_rpo of WAL on the primary and wait until status.optime covers it."""
    node = ha.nodes[primary]
    with node.connect(dbname=C.APP_DB) as c:
        c.execute("INSERT INTO writes (writer, seq, pad) SELECT 'bulk', g, repeat('x', 1000) "
                  f"FROM generate_series(1, {4 * PG_RPO // 1000}) g")
    target = C.wal_bytes(node)
    C.wait_for(lambda: (status_optime(ha) or 0) >= target - 65536, 10, 0.1,
               "the leader to publish the new optime in status")
    return target


def receive_lsn(ha, member):
    r = ha.nodes[member].query("SELECT pg_last_wal_receive_lsn()::text, "
                               "pg_last_wal_replay_lsn()::text")[0]
    return max(C.lsn_int(r[0]) or 0, C.lsn_int(r[1]) or 0)


def test_lagging_replica_never_promoted(ha):
    """One replica lags beyond pg_rpo, the other is current: when the primary's node dies the
    current one is promoted, and the lagging one stays a replica throughout."""
    old, good, lagging = ha.members
    make_lag(ha, lagging)
    target = write_beyond_rpo(ha, old)
    assert target - receive_lsn(ha, lagging) > PG_RPO
    ha.kill_node(old)
    new, dt = ha.wait_new_primary(old, timeout=PG_RTO + 15)
    for _ in range(30):
        assert ha.nodes[lagging].in_recovery() is True, f"{lagging} left recovery"
        time.sleep(0.1)
    assert new == good, f"{new} promoted, expected {good}"
    assert dt <= PG_RTO
    rows = ha.pilots[good].show_cluster()
    lag_row = [r for r in rows if r["name"] == lagging]
    assert lag_row and str(lag_row[0]["role"]).lower() not in ("primary", "leader"), rows


def test_no_failover_when_every_replica_lags(ha):
    """Both replicas lag beyond pg_rpo: after the primary's node dies nobody is promoted (waited
    for pg_rto + 5 s), the leader key stays empty, and SHOW CLUSTER / SHOW HA on a surviving
    pgpilot say that no member is eligible because of the lag."""
    old = ha.members[0]
    for m in ha.members[1:]:
        make_lag(ha, m)
    write_beyond_rpo(ha, old)
    ha.kill_node(old)
    deadline = time.monotonic() + PG_RTO + 5
    while time.monotonic() < deadline:
        assert ha.pg_primaries(exclude=(old,)) == [], "a lagging replica was promoted"
        assert ha.etcd_leader() in (None, old), ha.etcd_leader()
        time.sleep(0.2)
    assert ha.etcd_leader() is None, "the dead primary's key did not expire"
    pilot = ha.pilots[ha.members[1]]
    shown = C.text_of(pilot.show_cluster()) + " || " + C.text_of(pilot.show_ha())
    sys.stderr.write(f"\nSHOW CLUSTER + SHOW HA: {shown}\n")
    assert "eligible" in shown, "SHOW CLUSTER / SHOW HA do not say nobody is eligible: " + shown
    assert "pg_rpo" in shown or "lag" in shown, "the reason (lag) is not shown: " + shown
