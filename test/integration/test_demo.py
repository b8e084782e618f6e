"""`make demo` keeps working: the demo script in smoke mode (start, write through pgpilot, read
back from a replica, print the instructions, stop) exits 0, for the HA cluster and for the
single-node variant, and leaves no process behind."""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEMO = os.path.join(REPO, "test", "demo.py")

pytestmark = pytest.mark.skipif(not os.access(os.path.join(REPO, "pgpilot"), os.X_OK),
                                reason="no ./pgpilot")


def run_demo(mode):
    env = dict(os.environ, DEMO_SMOKE="1")
    if mode:
        env["DEMO_MODE"] = mode
    return subprocess.run([sys.executable, DEMO], env=env, capture_output=True, text=True,
                          timeout=240)


def pids_in(text):
    return {int(p) for p in re.findall(r"pid (\d+)", text)}


def alive(pid):
    """Running, not a zombie waiting for a parent (or a container's init) to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.timeout(300)
def test_demo_ha_smoke():
    """The HA demo starts etcd, three nodes and their pgpilots, proves a write and a replica read,
    prints how to connect and how to watch a failover, and stops everything it started."""
    r = run_demo(None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "smoke test: wrote through pgpilot" in r.stdout
    assert "dbname=app_ro" in r.stdout and "dbname=pgpilot" in r.stdout
    assert "kill -9" in r.stdout
    pids = pids_in(r.stdout)
    assert pids, r.stdout
    assert not [p for p in pids if alive(p)], "demo left processes running"


@pytest.mark.timeout(200)
def test_demo_single_smoke():
    """DEMO_MODE=single: one PostgreSQL behind one pgpilot, a query through it, then a clean
    stop."""
    r = run_demo("single")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "psql" in r.stdout
