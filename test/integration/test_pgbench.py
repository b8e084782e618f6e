"""pgbench through the pooler in transaction mode: simple and extended protocol with 50 clients,
and PAUSE / RESUME under load without failed transactions."""

import time

import pytest

import harness


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_pgbench_transaction_mode(pooler_factory, protocol):
    """pgbench -c 50 -j 2 -T 5 -M <protocol> (TPC-B-like) through a transaction pooler with
    pool_size 10: exit 0, no failed transaction, and work was actually done."""
    p = pooler_factory(settings={"default_pool_size": "10", "max_client_conn": "100"})
    rc, out = harness.pgbench(p.port, "-c", "50", "-j", "2", "-T", "5", "-M", protocol,
                              "--no-vacuum")
    assert rc == 0, out
    assert harness.pgbench_failed(out) == 0, out
    assert harness.pgbench_processed(out) > 100, out
    pool = p.pool(database="benchdb")
    assert pool["sv_active"] + pool["sv_idle"] + pool["sv_used"] <= 10


def test_pause_resume_under_load(pooler_factory):
    """pgbench -c 10 -T 8 in transaction mode; after 2 s PAUSE (returns once transactions have
    drained), 2 s paused, RESUME: pgbench reports 0 failed transactions and keeps going after."""
    p = pooler_factory(settings={"default_pool_size": "5"})
    bench = harness.pgbench_start(p.port, "-c", "10", "-j", "2", "-T", "8", "-M", "simple",
                                  "--no-vacuum", "-P", "1")
    try:
        time.sleep(2)
        t0 = time.monotonic()
        assert p.admin("PAUSE benchdb")[1] == "PAUSE"
        pause_took = time.monotonic() - t0
        # all servers of benchdb are released while paused
        pool = p.pool(database="benchdb")
        assert pool["sv_active"] == 0
        time.sleep(2)
        assert p.pool(database="benchdb")["cl_waiting"] > 0
        assert p.admin("RESUME benchdb")[1] == "RESUME"
        out, _ = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 0, out
    assert harness.pgbench_failed(out) == 0, out
    assert harness.pgbench_processed(out) > 50, out
    assert pause_took < 5
