"""Smoke test of the HA agent (ha/agent.c) without the pooler: two haprobe agents beside a
PostgreSQL 15 primary and its streaming replica, one etcd.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

The full HA suite through the pooler lives in the other test_ha_*.py files.
"""

import json
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ha_fixtures  # noqa: E402

PG_RTO = 10


@pytest.fixture(scope="module")
def haprobe_bin(tmp_path_factory):
    return ha_fixtures.build_haprobe(str(tmp_path_factory.mktemp("haprobe") / "haprobe"))


@pytest.fixture
def ha(haprobe_bin, request):
    s = ha_fixtures.HaSetup()
    s.binary = haprobe_bin
    yield s
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    s.teardown()
    if failed or os.environ.get("HA_SMOKE_VERBOSE"):
        for a in s.agents:
            print("==== agent %s ====\n%s" % (a.node.name, a.output()))
    for a in s.agents:
        assert "Sanitizer" not in a.output(), a.output()
        if a.proc.returncode == 0:  # stopped gracefully: it printed SHOW HA and exited
            assert "SHOW last_decision=" in a.output() and "EXIT" in a.output()


@pytest.mark.timeout(120)
def test_leader_follow_and_failover(ha):
    """The agent on the primary bootstraps the cluster and takes the leader key, publishes its
    member key and status; the replica's agent follows it. kill -9 of the primary's PostgreSQL
    and its agent makes the replica's agent promote it within pg_rto."""
    ha.etcd.start()
    p = ha.node("pg-1")
    p.initdb()
    p.start()
    r = ha.node("pg-2")
    r.basebackup(p)
    r.start()
    assert r.sql("SELECT pg_is_in_recovery()") == "t"

    a1 = ha.agent(p)
    a1.wait("holding the leader key on lease", 20)
    assert a1.find("(bootstrap)")
    a1.wait("decision: continue", 10)
    assert ha.etcd.get("/service/pgt/leader") == "pg-1"
    member = json.loads(ha_fixtures.wait_until(
        lambda: ha.etcd.get("/service/pgt/members/pg-1"), 10, "member key of pg-1"))
    assert member["role"] == "primary" and member["state"] == "running"
    assert member["conn_url"] == "postgres://127.0.0.1:%d/postgres" % p.port
    assert member["timeline"] == 1
    assert ha.etcd.get("/service/pgt/initialize")

    # status follows the primary's WAL
    p.sql("CREATE TABLE t AS SELECT generate_series(1, 10000) AS i")
    lsn = int(p.sql("SELECT pg_current_wal_lsn() - '0/0'"))

    def status_caught_up():
        v = ha.etcd.get("/service/pgt/status")
        return v and json.loads(v)["optime"] >= lsn
    ha_fixtures.wait_until(status_caught_up, 10, "status.optime to reach the primary's LSN")

    a2 = ha.agent(r)
    a2.wait("decision: follow: replica of pg-1", 20)
    rm = json.loads(ha_fixtures.wait_until(
        lambda: ha.etcd.get("/service/pgt/members/pg-2"), 10, "member key of pg-2"))
    assert rm["role"] == "replica"
    assert a1.find("decision: demote") is None, "the bootstrap primary must not be demoted"

    # wait for the replica to have replayed the table, so it is within pg_rpo
    ha_fixtures.wait_until(lambda: r.sql("SELECT count(*) FROM t") == "10000", 10,
                           "replica to replay")
    time.sleep(1.5)  # one more status publication after the replay

    t0 = time.monotonic()
    p.kill9()
    a1.kill9()
    promoted = a2.wait("PROMOTED", PG_RTO + 10, since=t0)
    took = promoted - t0
    print("promoted %.2f s after the kill (pg_rto %d s)" % (took, PG_RTO))
    assert took <= PG_RTO + 0.5, "promotion took %.2f s, pg_rto is %d s" % (took, PG_RTO)
    assert r.sql("SELECT pg_is_in_recovery()") == "f"
    assert r.sql("SELECT count(*) FROM t") == "10000"
    assert ha.etcd.get("/service/pgt/leader") == "pg-2"
    history = json.loads(ha_fixtures.wait_until(
        lambda: ha.etcd.get("/service/pgt/history"), 5, "history key"))
    assert history[-1][0] == 1 and history[-1][4] == "pg-2"

    def status_on_tl2():
        v = ha.etcd.get("/service/pgt/status")
        return v and json.loads(v).get("timeline") == 2
    ha_fixtures.wait_until(status_on_tl2, 5, "status on timeline 2")
    r.sql("CREATE TABLE after_failover (i int)")  # writable


def start_pair(ha):
    """etcd, a primary pg-1 and its replica pg-2, one agent each; pg-1 leads, pg-2 follows."""
    ha.etcd.start()
    p = ha.node("pg-1")
    p.initdb()
    p.start()
    r = ha.node("pg-2")
    r.basebackup(p)
    r.start()
    a1 = ha.agent(p)
    a1.wait("decision: continue", 20)
    a2 = ha.agent(r)
    a2.wait("decision: follow: replica of pg-1", 20)
    return p, r, a1, a2


@pytest.mark.timeout(120)
def test_fence_when_etcd_is_gone(ha):
    """With etcd frozen the leader cannot renew: it stops local writes (local_writes(false))
    and demotes its PostgreSQL to a standby before its lease can expire. When etcd comes back
    one member leads again and the other follows."""
    p, r, a1, a2 = start_pair(ha)
    ha_fixtures.wait_until(lambda: ha.etcd.get("/service/pgt/status"), 10, "status")
    t0 = time.monotonic()
    ha.etcd.pause()
    try:
        stopped = a1.wait("WRITES stopped", 10, since=t0)
        # L = 7 s at pg_rto 10: the lease lives at least 7 s after the last keepalive, which
        # was sent before the pause
        assert stopped - t0 < 7.0, "fenced %.2f s after the pause" % (stopped - t0)
        assert a1.find("decision: fence", since=t0)
        a1.wait("demote done", 30, since=t0)
        assert p.sql("SELECT pg_is_in_recovery()") == "t"
        assert a2.find("PROMOTED", since=t0) is None  # nobody could race without etcd
    finally:
        ha.etcd.resume()

    def one_primary():
        roles = sorted([p.sql("SELECT pg_is_in_recovery()") or "?",
                        r.sql("SELECT pg_is_in_recovery()") or "?"])
        leader = ha.etcd.get("/service/pgt/leader")
        return roles == ["f", "t"] and leader in ("pg-1", "pg-2") and leader
    leader = ha_fixtures.wait_until(one_primary, 40, "a new leader after etcd came back")
    follower = a2 if leader == "pg-1" else a1
    follower.wait("decision: follow: replica of %s" % leader, 20, since=t0)


@pytest.mark.timeout(60)
def test_follow_mode_never_writes(ha):
    """A follow-mode agent builds the view from etcd and probes, and writes no key: with no
    cluster there, the prefix stays empty."""
    ha.etcd.start()
    p = ha.node("pg-1")
    p.initdb()
    p.start()
    a = ha.agent(p, cluster="followed", extra={"ha_mode": "follow", "member": ""})
    a.wait("HA follow mode", 10)
    time.sleep(2)
    assert a.proc.poll() is None
    assert ha.etcd.get("/service/followed/leader") is None
    assert ha.etcd.get("/service/followed/members/pg-1") is None
    assert a.find("decision:") is None
