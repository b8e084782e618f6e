"""HA + DNS: the promoted node publishes the primary's address with an RFC 2136 UPDATE.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

A real BIND named (named.py) serves pg.test, updatable with a TSIG key, and locked.test, which
refuses every update. The members run on 127.0.0.11-13, so primary.pg-test.pg.test changes its
answer when the primary moves.
"""

import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster as C  # noqa: E402
import named as N  # noqa: E402

PG_RTO = 10
NAME = "primary.pg-test"

pytestmark = [pytest.mark.timeout(150),
              pytest.mark.skipif(not os.access(C.PGPILOT_BIN, os.X_OK), reason="no ./pgpilot"),
              pytest.mark.skipif(not N.available(), reason="BIND named not installed")]


@pytest.fixture(scope="module")
def dns_server():
    n = N.Named()
    try:
        n.start()
        yield n
    finally:
        n.stop()


def dns_section(server, zone):
    return {"update_servers": f"127.0.0.1:{server.port}", "zone": zone,
            "tsig_key_file": server.key_file, "ttl": 5, "primary_name": NAME,
            "update_timeout": 1}


@pytest.fixture
def ha_dns(request, dns_server):
    yield from C.cluster_fixture(request, n=3, pg_rto=PG_RTO,
                                 dns=dns_section(dns_server, "pg.test"))


@pytest.fixture
def ha_refused(request, dns_server):
    yield from C.cluster_fixture(request, n=3, pg_rto=PG_RTO,
                                 dns=dns_section(dns_server, "locked.test"))


def watch_promotion_and_dns(ha, server, old, fqdn, timeout):
    """Poll, side by side, the survivors' pg_is_in_recovery() and dig; returns (member
    promoted, its time, time the name answered with its address or None)."""
    survivors = [m for m in ha.members if m != old]
    seen = {"promoted": None, "t_promoted": None, "t_dns": None}
    stop = threading.Event()

    def poll_dns():
        while not stop.is_set():
            ans = server.dig(fqdn)
            m = seen["promoted"]
            if m and ans == [ha.nodes[m].host] and seen["t_dns"] is None:
                seen["t_dns"] = time.monotonic()
                return
            # the address of a survivor can show up before we noticed its promotion
            for s in survivors:
                if ans == [ha.nodes[s].host] and seen.get("early") is None:
                    seen["early"] = (s, time.monotonic())
            time.sleep(0.02)

    th = threading.Thread(target=poll_dns, daemon=True)
    th.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and seen["promoted"] is None:
            for s in survivors:
                if ha.nodes[s].in_recovery() is False:
                    seen["promoted"], seen["t_promoted"] = s, time.monotonic()
                    break
            time.sleep(0.02)
        assert seen["promoted"], "no survivor was promoted"
        th.join(5)
    finally:
        stop.set()
        th.join(2)
    t_dns = seen["t_dns"]
    early = seen.get("early")
    if early and early[0] == seen["promoted"] and (t_dns is None or early[1] < t_dns):
        t_dns = early[1]
    return seen["promoted"], seen["t_promoted"], t_dns


def test_dns_follows_failover(ha_dns, dns_server):
    """After the primary's node dies, dig primary.pg-test.pg.test answers the new primary's
    address within 1 s of its promotion (pg_is_in_recovery() false)."""
    ha, old = ha_dns, ha_dns.members[0]
    fqdn = NAME + ".pg.test"
    t_kill = time.monotonic()
    ha.kill_node(old)
    new, t_prom, t_dns = watch_promotion_and_dns(ha, dns_server, old, fqdn, PG_RTO + 15)
    sys.stderr.write(f"\npromoted {new} {t_prom - t_kill:.2f}s after the kill; DNS "
                     f"{'never' if t_dns is None else f'{t_dns - t_prom:+.2f}s after that'}\n")
    assert t_dns is not None, f"{fqdn} never answered {ha.nodes[new].host}: " \
                              f"{dns_server.dig(fqdn)}\n{ha.pilots[new].log[-3000:]}"
    assert t_dns - t_prom <= 1.0, f"DNS {t_dns - t_prom:.2f}s after the promotion"
    assert t_prom - t_kill <= PG_RTO
    assert dns_server.dig(fqdn) == [ha.nodes[new].host]


def test_refused_dns_update_does_not_delay_failover(ha_refused, dns_server):
    """The zone refuses updates (no update policy): the failover still completes within pg_rto,
    the refusal is logged by the new primary's pgpilot, and the record is unchanged."""
    ha, old = ha_refused, ha_refused.members[0]
    ha.kill_node(old)
    new, dt = ha.wait_new_primary(old, timeout=PG_RTO + 15)
    sys.stderr.write(f"\nfailover with a refusing DNS server: {new} after {dt:.2f}s\n")
    assert dt <= PG_RTO
    # the route works at once, whatever DNS says
    with ha.pilots[new].connect() as c:
        assert c.execute("SELECT inet_server_port()").fetchone()[0] == ha.nodes[new].port
    C.wait_for(lambda: "REFUSED" in ha.pilots[new].log, 10, 0.2,
               "the new primary's pgpilot to log the REFUSED update")
    assert dns_server.dig(NAME + ".locked.test") == []
    assert dns_server.dig("primary.locked.test") == ["127.0.0.250"]
