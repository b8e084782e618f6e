"""pytest fixtures for the pooler integration tests (see README and harness.py).

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

Fixtures: pg (session: a running, prepared PostgreSQL; with xdist each worker has its own),
fresh_pg (function: a private stopped PostgreSQL for tests that start it late), pooler_factory
(function: build and start poolers, stopped at teardown with their log printed when the test
failed), pooler (function: the default pooler, started), leak_check (session: every PID the
harness started is gone at the end; a pooler log holding a sanitizer report fails the test at
teardown). Markers: pgpilot_only (skipped when POOLER=pgbouncer).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "pgpilot_only: behaviour PgBouncer does not have (skipped "
                            "with POOLER=pgbouncer)")
    config.addinivalue_line("markers", "pgbouncer_only: PgBouncer-specific behaviour")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("pgpilot_only") and not harness.is_pgpilot():
            item.add_marker(pytest.mark.skip(reason="pgpilot-only behaviour"))
        if item.get_closest_marker("pgbouncer_only") and harness.is_pgpilot():
            item.add_marker(pytest.mark.skip(reason="PgBouncer-only behaviour"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    node = request.node
    return any(getattr(node, "rep_" + w, None) is not None and getattr(node, "rep_" + w).failed
               for w in ("setup", "call"))


@pytest.fixture(scope="session")
def pg(leak_check):
    """The shared running PostgreSQL of this worker (roles, appdb, benchdb with pgbench data)."""
    c = harness.make_cluster()
    yield c
    c.destroy()


@pytest.fixture(scope="session", autouse=False)
def leak_check():
    """Session-end check that every process the harness started is gone."""
    yield
    left = harness.REGISTRY.alive()
    assert not left, f"processes left running: {left}"


@pytest.fixture
def pooler_factory(request, pg):
    """Build poolers: factory(settings=..., databases=..., users=..., userlist=..., start=True,
    pg_port=...). All are stopped at teardown; their logs are printed if the test failed."""
    made = []

    # servers of the previous test's pooler may still be exiting: counting tests need a clean PG
    harness.wait_until(lambda: not [b for b in pg.backends() if b[1] != "postgres"], 10,
                       what="backends of earlier tests to exit")

    def make(start=True, opts=(), pg_port=None, **kw):
        p = harness.Pooler(pg_port or pg.port, **kw)
        made.append(p)
        if start:
            p.start(*opts)
        return p

    yield make
    failed = _failed(request)
    reports = []
    for p in made:
        p.stop(timeout=5)
        if failed:
            sys.stderr.write(f"\n----- {p.kind} log ({p.log_path}) -----\n{p.log}\n")
        pids = [p.proc.pid] if p.proc else []
        pids += p.extra_pids
        for pid in pids:
            assert harness.wait_pid_gone(pid, 5), f"pooler pid {pid} still running"
        report = harness.sanitizer_report(p.log)  # an ASan/UBSan build's stderr is in the log
        if report:
            if not failed:
                sys.stderr.write(f"\n----- {p.kind} log ({p.log_path}) -----\n{p.log}\n")
            reports.append(report)
        p.destroy()
    assert not reports, f"sanitizer report in the pooler log: {reports}"


@pytest.fixture
def pooler(pooler_factory):
    """The default pooler (transaction mode, md5 auth, appdb + benchdb), started."""
    return pooler_factory()


@pytest.fixture
def fresh_pg():
    """Factory for a private PostgreSQL (roles and appdb, no pgbench data), prepared then stopped
    (start it with .start()); destroyed at teardown."""
    made = []

    def make(port=None):
        c = harness.make_cluster(port=port, bench=False, start=False)
        made.append(c)
        return c

    yield make
    for c in made:
        c.destroy()
        if c.proc is not None:
            assert harness.wait_pid_gone(c.proc.pid, 5)
