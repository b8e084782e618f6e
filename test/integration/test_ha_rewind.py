"""HA: a former primary that wrote past the fork is rewound and streams again on its own address.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

Three nodes (cluster.py) at pg_rto = 10 s, with each node's settings (listen_addresses, port,
unix_socket_directories, cluster_name) in its own postgresql.conf (the usual layout) or in a
file of pg_data that its postgresql.conf includes (cluster.py's layout), and a line of its own
in its pg_hba.conf: a plain pg_rewind breaks both, because it copies the source's files. The primary's whole node (pgpilot, postmaster and children) is paused with
SIGSTOP while a writer connected straight to it has an INSERT in flight; a replica is promoted;
on SIGCONT the old primary commits what it had in flight (WAL past the fork) before its agent
fences it, so the agent must rewind it with a pg_rewind that really copies data, and the node
must come back as a replica of the new primary on its own address and port.
"""

import os
import re
import signal
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster as C  # noqa: E402

PG_RTO = 10

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not os.access(C.PGPILOT_BIN, os.X_OK), reason="no ./pgpilot")]


def own_config_files(node, member, layout):
    """Give the node's pg_hba.conf a line of its own and, for layout "postgresql.conf", move
    its settings from the included pgpilot_node.conf (cluster.py's layout, kept for layout
    "include") into its postgresql.conf. Files owned by postgres stay so: appended to."""
    with open(os.path.join(node.datadir, "pg_hba.conf"), "a") as f:
        f.write(f"# pg_hba.conf of {member}\n")
    if layout == "include":
        return
    node_conf = os.path.join(node.datadir, "pgpilot_node.conf")
    with open(node_conf) as f:
        settings = f.read()
    with open(os.path.join(node.datadir, "postgresql.conf"), "a") as f:
        f.write(f"\n# the settings of {member} alone\n{settings}")
    os.remove(node_conf)


@pytest.fixture(params=["postgresql.conf", "include"])
def ha(request):
    """cluster_fixture's life cycle, with the per-node files set before the agents start: each
    node's settings in its postgresql.conf, or in a file of pg_data that it includes."""
    c = C.HaCluster(n=3, pg_rto=PG_RTO)
    try:
        c.start(start_pilots=False)
        for m in c.members:
            own_config_files(c.nodes[m], m, request.param)
        c.start_pilots()
    except BaseException:
        sys.stderr.write(c.logs() + "\n" + c.pg_logs() + "\n")
        c.destroy()
        raise
    yield c
    if C.request_failed(request):
        sys.stderr.write("\n" + c.logs(limit=20000) + "\n" + c.pg_logs() + "\n")
    left = c.destroy()
    assert not left, f"processes left running: {left}"


class Direct:
    """A Writer target that connects straight to a node (database app as user app)."""

    def __init__(self, node):
        self.node = node

    def connect(self, **kw):
        return self.node.connect(dbname=C.APP_DB, user=C.APP_USER, **kw)


def session_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def session_pids(sid):
    """Live PIDs of session <sid>: a pgpilot (started in a session of its own) and whatever it
    forked that stayed in it (a fence guard, say)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and session_of(int(d)) == sid and C.pid_alive(int(d)):
            out.append(int(d))
    return out


def guard_pids(pilot):
    """The fence guard a pgpilot forked (it runs in a session of its own), from its log."""
    out = []
    for m in re.finditer(r"started the fence guard \(PID (\d+)\)", pilot.log):
        pid = int(m.group(1))
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                mine = b"pgpilot" in f.read()
        except OSError:
            mine = False
        if mine and C.pid_alive(pid):
            out.append(pid)
    return out


def pause_node(ha, member):
    """SIGSTOP the whole node at once, as a VM pause: the member's pgpilot and every process of
    its session, the postmaster and its children. Returns (postgres PIDs, pgpilot PIDs)."""
    pilot = ha.pilots[member].proc.pid
    pm = ha.nodes[member].postmaster_pid()
    assert pm, f"{member} runs no PostgreSQL"
    pg = [pm] + C.proc_children(pm)
    agent = [p for p in session_pids(session_of(pilot)) if p not in pg]
    agent += [p for p in guard_pids(ha.pilots[member]) if p not in agent]
    C.kill_pids(pg + agent, signal.SIGSTOP)
    return pg, agent


def resume_node(pids):
    """SIGCONT PostgreSQL first, its pgpilot a moment later: the backends finish what they had
    in flight (they commit past the fork) before anything of the agent's can act."""
    pg, agent = pids
    C.kill_pids(pg, signal.SIGCONT)
    time.sleep(0.5)
    C.kill_pids(agent, signal.SIGCONT)


def log_lines(pilot, text):
    return [line for line in pilot.log.splitlines() if text in line]


def test_rewound_old_primary_keeps_its_config_and_streams(ha):
    """The paused old primary wrote past the fork; its agent rewinds it (pg_rewind reports a
    divergence and a rewind from the last common checkpoint), keeps the node's own
    postgresql.conf and pg_hba.conf, starts it as a standby on its own address and port, and the
    new primary's pg_stat_replication lists it streaming; the rows it committed past the fork
    are gone from it, so the rewind really replaced data."""
    old = ha.members[0]
    node = ha.nodes[old]
    writer = C.Writer(Direct(node), "direct", interval=0.02, reconnect=False)
    writer.start()
    C.wait_for(lambda: len(writer.acks) >= 25, 20, 0.05,
               f"writes straight to {old} (errors: {writer.errors[-3:]})")
    pids = pause_node(ha, old)
    try:
        new, _ = ha.wait_new_primary(old, timeout=PG_RTO + 25)
        # the new primary writes too, so both histories move on from the fork
        ha.nodes[new].query("INSERT INTO writes (writer, seq) VALUES ('on-new', 1)",
                            dbname=C.APP_DB)
    finally:
        resume_node(pids)
    new_node = ha.nodes[new]
    try:
        C.wait_for(lambda: log_lines(ha.pilots[old], "rewind done"), 90, 0.2,
                   f"{old}'s agent to rewind it (log:\n{ha.pilots[old].log[-4000:]})")
    finally:
        writer.stop()
    # a standby on its own address and port, streaming from the new primary
    C.wait_for(lambda: node.in_recovery() is True, 60, 0.2,
               f"{old} to answer in recovery on {node.host}:{node.port}")

    def listed():
        rows = new_node.query("SELECT application_name, state FROM pg_stat_replication")
        return [r for r in rows if r[0] == old and r[1] == "streaming"]
    C.wait_for(listed, 60, 0.2, f"{new}'s pg_stat_replication to list {old} streaming")
    C.wait_for(lambda: (node.wal_receiver() or (None, None, None))[2] == new_node.port, 30, 0.2,
               f"{old}'s WAL receiver to read from {new}")
    assert node.query("SHOW port")[0][0] == str(node.port)
    assert node.query("SHOW listen_addresses")[0][0] == node.host
    assert node.query("SHOW cluster_name")[0][0] == old
    with open(os.path.join(node.datadir, "pg_hba.conf")) as f:
        hba = f.read()
    assert f"# pg_hba.conf of {old}" in hba and f"# pg_hba.conf of {new}" not in hba, hba

    # what the agent reports: a rewind that copied data, the node's own files kept
    done = log_lines(ha.pilots[old], "rewind done")[-1]
    assert "servers diverged at WAL location" in done, done
    assert "rewinding from last common checkpoint" in done, done
    assert "no rewind required" not in done, done
    assert "kept the node's own configuration files" in done, done


    # the old primary committed rows past the fork; after the rewind it has the new history
    acked_old = writer.acked_keys()
    on_new = C.rows_present(new_node, ["direct"])
    past_fork = acked_old - on_new
    assert past_fork, "the old primary committed nothing past the fork: no divergence to rewind"
    new_node.query("INSERT INTO writes (writer, seq) VALUES ('after-rewind', 1)", dbname=C.APP_DB)
    C.wait_for(lambda: node.query("SELECT count(*) FROM writes WHERE writer = 'after-rewind'",
                                  dbname=C.APP_DB)[0][0] == 1, 30, 0.2,
               f"a row written on {new} to reach {old}")
    assert C.rows_present(node, ["direct"]) == C.rows_present(new_node, ["direct"])
    assert not (past_fork & C.rows_present(node, ["direct"]))

    # failed starts did not spin: at most a handful of start attempts after the wake
    starts = [line for line in ha.pilots[old].log.splitlines() if "starting start as" in line]
    assert len(starts) <= 5, "\n".join(starts[-10:])
