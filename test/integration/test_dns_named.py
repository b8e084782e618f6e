"""Integration tests of dns/ (RFC 2136 UPDATE + TSIG) against a real BIND named.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

The fixtures below build test/integration/dnsprobe.c against build/libdns.a and start one named
(named.py, shared with the HA tests: foreground -g, temp dir, free port, stopped by PID) with a
TSIG-updatable zone pg.test and a zone locked.test that has no update policy. dnsprobe
drives the updater API on a libevent loop and prints one "outcome=... " line per publication.
"""

import os
import re
import socket
import subprocess
import time

import pytest

from named import Named

pytestmark = pytest.mark.timeout(180)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OTHER_SECRET = "c29tZS1vdGhlci1zZWNyZXQtdGhhdC1pcy0zMi1ieXQ="


@pytest.fixture(scope="module")
def dnsprobe(tmp_path_factory):
    """Build the dns archives and the probe that links them."""
    subprocess.run(["make", "-C", ROOT, "--no-print-directory", "build/libdns.a",
                    "build/libprotocol.a"], check=True, capture_output=True)
    out = str(tmp_path_factory.mktemp("dnsprobe") / "dnsprobe")
    libs = subprocess.run(["pkg-config", "--libs", "libevent", "libcares", "openssl"],
                          check=True, capture_output=True, text=True).stdout.split()
    subprocess.run(["cc", "-std=gnu11", "-g", "-Wall", "-Wextra", "-Werror",
                    "-Wno-unused-parameter", "-I", ROOT, "-o", out,
                    os.path.join(ROOT, "test/integration/dnsprobe.c"),
                    os.path.join(ROOT, "build/libdns.a"),
                    os.path.join(ROOT, "build/libprotocol.a")] + libs,
                   check=True)
    return out


@pytest.fixture(scope="module")
def named():
    n = Named()
    try:
        n.start()
        yield n
    finally:
        n.stop()


def probe(dnsprobe, opts, *args, timeout=60):
    """Run dnsprobe with [dns] settings <opts>; return (exit status, list of outcome dicts,
    stderr)."""
    argv = [dnsprobe]
    for k, v in opts.items():
        argv += ["-o", f"{k}={v}"]
    argv += list(args)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return r.returncode, [parse_line(line) for line in r.stdout.splitlines()], r.stderr


KEYS = ("outcome", "record", "value", "attempts", "rcode", "tsig_error", "skew", "detail",
        "resolved", "address", "error", "host", "addresses", "ttl_left", "stale", "last_error")
KEY_RE = re.compile(r"(?:^| )(" + "|".join(KEYS) + ")=")


def parse_line(line):
    """Parse a dnsprobe line 'outcome=network error record=... detail=free text' into a dict:
    values may contain spaces, so split on the known keys only."""
    marks = list(KEY_RE.finditer(line))
    out = {}
    for n, m in enumerate(marks):
        end = marks[n + 1].start() if n + 1 < len(marks) else len(line)
        out[m.group(1)] = line[m.end():end]
    return out


def base_opts(named, **extra):
    opts = {"update_servers": f"127.0.0.1:{named.port}", "zone": "pg.test",
            "tsig_key_file": named.key_file, "update_timeout": "1", "update_tries": "2",
            "update_retry_delay": "0.2"}
    opts.update(extra)
    return opts


def test_good_update(named, dnsprobe):
    """A signed update replaces primary's A record; the reply MAC verifies (outcome ok)."""
    assert named.dig("primary.pg.test") == ["127.0.0.250"]
    rc, res, err = probe(dnsprobe, base_opts(named), "primary", "127.0.0.23")
    assert rc == 0, err
    assert res[0]["outcome"] == "ok", res
    assert res[0]["record"] == "primary.pg.test."
    assert res[0]["attempts"] == "1"
    assert res[0]["rcode"] == "0"
    assert named.dig("primary.pg.test") == ["127.0.0.23"]


def test_update_over_tcp_and_family_switch(named, dnsprobe):
    """use_tcp sends over TCP; an IPv6 primary replaces the A RRset by an AAAA one."""
    rc, res, err = probe(dnsprobe, base_opts(named, use_tcp="on", tsig_key_name="pgpool-update"),
                         "primary", "fd00::23")
    assert rc == 0, err
    assert res[0]["outcome"] == "ok"
    assert named.dig("primary.pg.test", "AAAA") == ["fd00::23"]
    assert named.dig("primary.pg.test", "A") == []
    rc, res, err = probe(dnsprobe, base_opts(named), "primary", "127.0.0.24")
    assert rc == 0, err
    assert named.dig("primary.pg.test", "A") == ["127.0.0.24"]
    assert named.dig("primary.pg.test", "AAAA") == []


def test_wrong_secret_is_badsig(named, dnsprobe):
    """A key with the right name and a wrong secret: NOTAUTH/BADSIG, not retried."""
    before = named.dig("primary.pg.test")
    opts = base_opts(named, tsig_key_file="", tsig_key_name="pgpool-update",
                     tsig_secret=OTHER_SECRET)
    rc, res, err = probe(dnsprobe, opts, "primary", "127.0.0.99")
    assert rc == 1
    assert res[0]["outcome"] == "BADSIG", res
    assert res[0]["rcode"] == "9"
    assert res[0]["tsig_error"] == "16"
    assert res[0]["attempts"] == "1"
    assert "could not update DNS record" in err
    assert named.dig("primary.pg.test") == before


def test_unknown_key_is_badkey(named, dnsprobe):
    """A key name the server does not know: NOTAUTH/BADKEY."""
    opts = base_opts(named, tsig_key_file="", tsig_key_name="nobody-knows-me",
                     tsig_secret=OTHER_SECRET)
    rc, res, err = probe(dnsprobe, opts, "primary", "127.0.0.98")
    assert rc == 1
    assert res[0]["outcome"] == "BADKEY", res
    assert res[0]["tsig_error"] == "17"


def test_zone_without_update_policy_is_refused(named, dnsprobe):
    """locked.test has no update-policy: REFUSED (seen because of ARES_FLAG_NOCHECKRESP)."""
    rc, res, err = probe(dnsprobe, base_opts(named, zone="locked.test"), "primary", "127.0.0.5")
    assert rc == 1
    assert res[0]["outcome"] == "REFUSED", res
    assert res[0]["rcode"] == "5"
    assert res[0]["attempts"] == "1"
    assert named.dig("primary.locked.test") == ["127.0.0.250"]


def test_not_authoritative_zone(named, dnsprobe):
    """A zone the server does not serve: NOTAUTH without a TSIG error."""
    rc, res, err = probe(dnsprobe, base_opts(named, zone="other.test"), "primary", "127.0.0.5")
    assert rc == 1
    assert res[0]["outcome"] == "NOTAUTH", res
    assert res[0]["tsig_error"] == "0"


def test_unreachable_server_times_out(dnsprobe):
    """A server that never answers: 'timeout' after update_tries attempts, in bounded time."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    try:
        opts = {"update_servers": f"127.0.0.1:{port}", "zone": "pg.test",
                "update_timeout": "0.4", "update_tries": "3", "update_retry_delay": "0.2",
                "tsig_key_name": "pgpool-update", "tsig_secret": OTHER_SECRET}
        t0 = time.time()
        rc, res, err = probe(dnsprobe, opts, "primary", "127.0.0.7")
        elapsed = time.time() - t0
    finally:
        silent.close()
    assert rc == 1
    assert res[0]["outcome"] == "timeout", res
    assert res[0]["attempts"] == "3"
    # 3 x 0.4 s waits + 0.2 s + 0.4 s back-off, with slack; never c-ares' 4 x 5 s default
    assert 1.2 <= elapsed < 6, elapsed
    # logged once while retrying, then the final error
    assert err.count("failed: timeout") == 1, err
    assert err.count("could not update DNS record") == 1, err


def test_second_server_is_tried(named, dnsprobe):
    """update_servers are tried in turn: a silent first server, named second."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    try:
        opts = base_opts(named, update_timeout="0.3",
                         update_servers=f"127.0.0.1:{port},127.0.0.1:{named.port}")
        rc, res, err = probe(dnsprobe, opts, "primary", "127.0.0.26")
    finally:
        silent.close()
    assert rc == 0, err
    assert res[0]["outcome"] == "ok"
    assert named.dig("primary.pg.test") == ["127.0.0.26"]


def test_replica_rrset(named, dnsprobe):
    """Several replica addresses in one RRset (A and AAAA), then an empty set deletes it."""
    opts = base_opts(named, replica_name="replicas")
    rc, res, err = probe(dnsprobe, opts, "replicas", "127.0.0.31", "127.0.0.32", "fd00::33")
    assert rc == 0, err
    assert res[0]["outcome"] == "ok", res
    assert res[0]["record"] == "replicas.pg.test."
    assert res[0]["value"] == "127.0.0.31,127.0.0.32,fd00::33"
    assert named.dig("replicas.pg.test", "A") == ["127.0.0.31", "127.0.0.32"]
    assert named.dig("replicas.pg.test", "AAAA") == ["fd00::33"]
    rc, res, err = probe(dnsprobe, opts, "replicas", "127.0.0.32")
    assert rc == 0, err
    assert named.dig("replicas.pg.test", "A") == ["127.0.0.32"]
    assert named.dig("replicas.pg.test", "AAAA") == []
    rc, res, err = probe(dnsprobe, opts, "replicas")
    assert rc == 0, err
    assert named.dig("replicas.pg.test", "A") == []


def test_resolver_sees_published_address(named, dnsprobe):
    """The backend resolver (ares_getaddrinfo) gets the published address and its TTL."""
    rc, res, err = probe(dnsprobe, base_opts(named, ttl="30"), "primary", "127.0.0.27")
    assert rc == 0, err
    r = subprocess.run([dnsprobe, "-o", "dns_max_ttl=20", "-s", f"127.0.0.1:{named.port}",
                        "resolve", "primary.pg.test", "3"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [parse_line(x) for x in r.stdout.splitlines()]
    assert [x["address"] for x in lines if "resolved" in x] == ["127.0.0.27"] * 3
    host = [x for x in lines if "host" in x][0]
    assert host["addresses"] == "127.0.0.27"
    assert 15 <= int(host["ttl_left"]) <= 20  # ttl 30 capped by dns_max_ttl
    r = subprocess.run([dnsprobe, "-s", f"127.0.0.1:{named.port}", "resolve",
                        "missing.pg.test"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "could not resolve host \"missing.pg.test\"" in r.stderr


def test_bad_settings_rejected(dnsprobe, named):
    """Validation catches a name outside the zone and a host name as update server."""
    rc, res, err = probe(dnsprobe, base_opts(named, primary_name="db.elsewhere.test."),
                         "primary", "127.0.0.1")
    assert rc == 2
    assert "is not inside zone" in err
    rc, res, err = probe(dnsprobe, base_opts(named, update_servers="ns.pg.test"),
                         "primary", "127.0.0.1")
    assert rc == 2
    assert "not an IP address" in err


def test_large_update_goes_over_tcp(named, dnsprobe):
    """32 IPv6 replicas make a message over 512 bytes: c-ares sends it over TCP by itself."""
    addrs = [f"fd00::{i:x}" for i in range(1, 33)]
    rc, res, err = probe(dnsprobe, base_opts(named, replica_name="many"), "replicas", *addrs)
    assert rc == 0, err
    assert res[0]["outcome"] == "ok", res
    assert named.dig("many.pg.test", "AAAA") == sorted(addrs)
