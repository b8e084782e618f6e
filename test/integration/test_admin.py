"""Admin console: every SHOW command with PgBouncer's exact column names and order (taken from
the Debian PgBouncer 1.18.0 on this machine), and the control commands (PAUSE, RESUME, KILL,
RECONNECT, DISABLE, ENABLE, WAIT_CLOSE, SET, SHUTDOWN)."""

import re
import threading
import time

import psycopg
import pytest

import harness

CLIENT_SERVER_COLS = ["type", "user", "database", "state", "addr", "port", "local_addr",
                      "local_port", "connect_time", "request_time", "wait", "wait_us",
                      "close_needed", "ptr", "link", "remote_pid", "tls", "application_name"]
AVG_TOTAL_COLS = ["database", "xact_count", "query_count", "bytes_received", "bytes_sent",
                  "xact_time", "query_time", "wait_time"]

SHOW_COLUMNS = {
    "POOLS": ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
              "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
              "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us",
              "pool_mode"],
    "CLIENTS": CLIENT_SERVER_COLS,
    "SERVERS": CLIENT_SERVER_COLS,
    "STATS": ["database", "total_xact_count", "total_query_count", "total_received",
              "total_sent", "total_xact_time", "total_query_time", "total_wait_time",
              "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent", "avg_xact_time",
              "avg_query_time", "avg_wait_time"],
    "STATS_TOTALS": AVG_TOTAL_COLS,
    "STATS_AVERAGES": AVG_TOTAL_COLS,
    "TOTALS": ["name", "value"],
    "DATABASES": ["name", "host", "port", "database", "force_user", "pool_size",
                  "min_pool_size", "reserve_pool", "pool_mode", "max_connections",
                  "current_connections", "paused", "disabled"],
    "USERS": ["name", "pool_mode"],
    "CONFIG": ["key", "value", "default", "changeable"],
    "LISTS": ["list", "items"],
    "MEM": ["name", "size", "used", "free", "memtotal"],
    "VERSION": ["version"],
}
# SHOW STATE appeared in PgBouncer 1.20 (key/value rows); the Debian 1.18 lacks it.
STATE_COLUMNS = ["key", "value"]

TOTALS_NAMES = ["total_xact_count", "total_query_count", "total_client_bytes",
                "total_server_bytes", "total_xact_time", "total_query_time", "total_wait_time",
                "avg_xact_count", "avg_query_count", "avg_client_bytes", "avg_server_bytes",
                "avg_xact_time", "avg_query_time", "avg_wait_time"]
LISTS_NAMES = ["databases", "users", "pools", "free_clients", "used_clients", "login_clients",
               "free_servers", "used_servers", "dns_names", "dns_zones", "dns_queries",
               "dns_pending"]
# every option of pgpilot's contract that PgBouncer 1.18 also has must appear in SHOW CONFIG
CONTRACT_OPTIONS = ["listen_addr", "listen_port", "unix_socket_dir", "auth_type", "auth_file",
                    "admin_users", "stats_users", "pool_mode", "max_client_conn",
                    "default_pool_size", "min_pool_size", "reserve_pool_size",
                    "reserve_pool_timeout", "max_db_connections", "max_user_connections",
                    "server_reset_query", "server_reset_query_always", "server_check_query",
                    "server_check_delay", "server_lifetime", "server_idle_timeout",
                    "server_connect_timeout", "server_login_retry", "query_timeout",
                    "query_wait_timeout", "client_idle_timeout", "client_login_timeout",
                    "idle_transaction_timeout", "ignore_startup_parameters", "logfile",
                    "pidfile", "log_connections", "log_disconnections", "stats_period",
                    "tcp_keepalive", "pkt_buf", "max_packet_size"]


@pytest.fixture
def busy_pooler(pooler_factory):
    """A pooler with one idle client of appdb (so that pools, clients and servers exist)."""
    p = pooler_factory()
    c = p.connect()
    c.execute("SELECT 1")
    yield p, c
    c.close()


@pytest.mark.parametrize("what", list(SHOW_COLUMNS))
def test_show_columns(busy_pooler, what):
    """SHOW <what> returns PgBouncer's column names in PgBouncer's order."""
    p, _ = busy_pooler
    cols, rows = p.admin(f"SHOW {what}")
    assert cols == SHOW_COLUMNS[what]
    assert isinstance(rows, list)
    # lower-case and trailing semicolon are accepted too
    cols2, _ = p.admin(f"show {what.lower()};")
    assert cols2 == cols


@pytest.mark.pgpilot_only
def test_show_state(busy_pooler):
    """SHOW STATE (PgBouncer >= 1.20): active / paused / suspended as key/value rows, following
    PAUSE and RESUME."""
    p, _ = busy_pooler
    cols, rows = p.admin("SHOW STATE")
    assert cols == STATE_COLUMNS
    assert dict(rows) == {"active": "yes", "paused": "no", "suspended": "no"}
    with p.admin_conn() as a:
        a.execute("PAUSE")
        assert dict(a.execute("SHOW STATE").fetchall())["paused"] == "yes"
        a.execute("RESUME")
        assert dict(a.execute("SHOW STATE").fetchall())["paused"] == "no"


def test_show_contents(busy_pooler, pg):
    """The SHOW rows describe the live state: the client, its server (remote_pid = the backend
    pid), the pool, the databases, the users, totals and lists."""
    p, c = busy_pooler
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    clients = p.admin_dicts("SHOW CLIENTS")
    app = [x for x in clients if x["database"] == "appdb"]
    assert len(app) == 1 and app[0]["user"] == "md5user" and app[0]["type"] == "C"
    assert app[0]["addr"] == "127.0.0.1"
    servers = p.admin_dicts("SHOW SERVERS")
    assert [s["remote_pid"] for s in servers if s["database"] == "appdb"] == [pid]
    assert all(s["type"] == "S" for s in servers)
    pool = p.pool()
    assert pool["cl_active"] == 1 and pool["sv_idle"] + pool["sv_used"] == 1
    assert pool["pool_mode"] == "transaction"
    dbs = {d["name"]: d for d in p.admin_dicts("SHOW DATABASES")}
    assert dbs["appdb"]["port"] == pg.port and dbs["appdb"]["host"] == "127.0.0.1"
    assert dbs["appdb"]["database"] == "appdb" and dbs["appdb"]["pool_size"] == 10
    assert dbs["appdb"]["paused"] == 0 and dbs["appdb"]["disabled"] == 0
    assert "benchdb" in dbs
    users = [u["name"] for u in p.admin_dicts("SHOW USERS")]
    assert "md5user" in users
    stats = {s["database"]: s for s in p.admin_dicts("SHOW STATS")}
    assert stats["appdb"]["total_xact_count"] >= 2 and stats["appdb"]["total_query_count"] >= 2
    totals = p.admin("SHOW TOTALS")[1]
    assert [r[0] for r in totals] == TOTALS_NAMES
    lists = dict(p.admin("SHOW LISTS")[1])
    assert list(lists) == LISTS_NAMES
    assert lists["databases"] >= 2 and lists["pools"] >= 1 and lists["used_clients"] >= 2
    version = p.admin("SHOW VERSION")[1][0][0]
    assert version.startswith("pgpilot" if harness.is_pgpilot() else "PgBouncer")


def test_show_config_lists_contract_options(busy_pooler):
    """SHOW CONFIG has a row for every option of the contract, with the values from the ini."""
    p, _ = busy_pooler
    cfg = {r[0]: r for r in p.admin("SHOW CONFIG")[1]}
    missing = [k for k in CONTRACT_OPTIONS if k not in cfg]
    assert not missing
    assert cfg["pool_mode"][1] == "transaction"
    assert cfg["default_pool_size"][1] == "10"
    assert cfg["listen_port"][1] == str(p.port)
    assert cfg["pool_mode"][3] in ("yes", "no")


def test_show_help(pooler):
    """SHOW HELP answers with a NOTICE listing the commands."""
    notices = []
    with pooler.admin_conn() as c:
        c.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_detail)))
        c.execute("SHOW HELP")
    text = " ".join(f"{m} {d}" for m, d in notices)
    assert "Console usage" in text
    for word in ("SHOW", "POOLS", "RELOAD", "PAUSE", "RESUME", "KILL", "SHUTDOWN"):
        assert word in text


def test_unknown_command(pooler):
    """An unknown command or SHOW target is an error; the console stays usable."""
    with pooler.admin_conn() as c:
        with pytest.raises(psycopg.Error):
            c.execute("SHOW NOSUCHTHING")
        with pytest.raises(psycopg.Error):
            c.execute("FROBNICATE")
        assert c.execute("SHOW VERSION").fetchone()


def test_pause_resume_db(pooler_factory):
    """PAUSE appdb: a new query waits (SHOW DATABASES paused=1) without failing; RESUME lets it
    run. RESUME of a database that is not paused is an error. benchdb is unaffected."""
    p = pooler_factory()
    with p.connect() as c, p.connect(dbname="benchdb") as other:
        c.execute("SELECT 1")
        assert p.admin("PAUSE appdb")[1] == "PAUSE"
        dbs = {d["name"]: d for d in p.admin_dicts("SHOW DATABASES")}
        assert dbs["appdb"]["paused"] == 1 and dbs["benchdb"]["paused"] == 0
        done = []
        t = threading.Thread(target=lambda: done.append(c.execute("SELECT 7").fetchone()[0]))
        t.start()
        time.sleep(1)
        assert not done, "query ran while the database was paused"
        assert other.execute("SELECT 1").fetchone()[0] == 1
        assert p.admin("RESUME appdb")[1] == "RESUME"
        t.join(10)
        assert done == [7]
    with pytest.raises(psycopg.Error):
        p.admin("RESUME appdb")
    with pytest.raises(psycopg.Error):
        p.admin("PAUSE nosuchdb")


def test_pause_all_waits_for_transaction(pooler_factory):
    """PAUSE (all) returns only after running transactions end; afterwards no server is left
    open; RESUME restores service."""
    p = pooler_factory()
    with p.connect() as c:
        c.execute("BEGIN")
        c.execute("SELECT 1")
        result = {}

        def pause():
            t0 = time.monotonic()
            result["tag"] = p.admin("PAUSE")[1]
            result["t"] = time.monotonic() - t0

        t = threading.Thread(target=pause)
        t.start()
        time.sleep(1)
        assert "tag" not in result, "PAUSE returned while a transaction was open"
        c.execute("COMMIT")
        t.join(10)
        assert result["tag"] == "PAUSE" and result["t"] >= 0.9
        assert all(s["database"] != "appdb" for s in p.admin_dicts("SHOW SERVERS"))
        p.admin("RESUME")
        assert c.execute("SELECT 3").fetchone()[0] == 3


def test_kill_db(pooler_factory):
    """KILL appdb drops its clients and servers at once; new clients wait until RESUME."""
    p = pooler_factory()
    c = p.connect()
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert p.admin("KILL appdb")[1] == "KILL"
    with pytest.raises(psycopg.OperationalError):
        c.execute("SELECT 1")
    c.close()
    dbs = {d["name"]: d for d in p.admin_dicts("SHOW DATABASES")}
    assert dbs["appdb"]["paused"] == 1
    got = []
    t = threading.Thread(target=lambda: got.append(
        p.connect().execute("SELECT pg_backend_pid()").fetchone()[0]))
    t.start()
    time.sleep(0.8)
    assert not got
    p.admin("RESUME appdb")
    t.join(10)
    assert got and got[0] != pid
    with pytest.raises(psycopg.Error):
        p.admin("KILL nosuchdb")


def test_reconnect_and_wait_close(pooler_factory, pg):
    """RECONNECT appdb closes its servers once released; WAIT_CLOSE returns when they are gone;
    the client then gets a new backend, without an error."""
    p = pooler_factory()
    with p.connect() as c:
        old = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert p.admin("RECONNECT appdb")[1] == "RECONNECT"
        assert p.admin("WAIT_CLOSE appdb")[1] == "WAIT_CLOSE"
        assert old not in [b[0] for b in pg.backends()]
        new = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert new != old
        assert p.admin("RECONNECT")[1] == "RECONNECT"
        assert p.admin("WAIT_CLOSE")[1] == "WAIT_CLOSE"
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_disable_enable(pooler_factory):
    """DISABLE appdb refuses new clients (existing ones keep working); ENABLE admits them."""
    p = pooler_factory()
    with p.connect() as c:
        assert p.admin("DISABLE appdb")[1] == "DISABLE"
        dbs = {d["name"]: d for d in p.admin_dicts("SHOW DATABASES")}
        assert dbs["appdb"]["disabled"] == 1
        with pytest.raises(harness.ServerError) as ei:
            harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
        # PgBouncer: 'database "appdb" is disabled'; pgpilot may use PostgreSQL's wording
        assert re.search(r'database "appdb" (is disabled|does not allow connections)',
                         ei.value.message), ei.value.message
        assert c.execute("SELECT 1").fetchone()[0] == 1
        assert p.admin("ENABLE appdb")[1] == "ENABLE"
        with p.connect() as d:
            assert d.execute("SELECT 2").fetchone()[0] == 2


def test_set(pooler):
    """SET key = value changes a setting (SHOW CONFIG shows it, SHOW DATABASES uses it); an
    unknown key or bad value is an error."""
    tag = pooler.admin("SET default_pool_size = 7")[1]
    assert tag.startswith("SET")
    cfg = {r[0]: r[1] for r in pooler.admin("SHOW CONFIG")[1]}
    assert cfg["default_pool_size"] == "7"
    dbs = {d["name"]: d for d in pooler.admin_dicts("SHOW DATABASES")}
    assert dbs["appdb"]["pool_size"] == 7
    pooler.admin("SET query_wait_timeout = 12")
    assert {r[0]: r[1] for r in pooler.admin("SHOW CONFIG")[1]}["query_wait_timeout"] == "12"
    with pytest.raises(psycopg.Error):
        pooler.admin("SET no_such_setting = 1")
    with pytest.raises(psycopg.Error):
        pooler.admin("SET default_pool_size = notanumber")
    assert {r[0]: r[1] for r in pooler.admin("SHOW CONFIG")[1]}["default_pool_size"] == "7"


def test_shutdown_command(pooler_factory):
    """SHUTDOWN from the console: the process exits with status 0 and stops listening."""
    p = pooler_factory()
    with p.connect() as c:
        c.execute("SELECT 1")
    try:
        p.admin("SHUTDOWN")  # PgBouncer closes the console without a reply
    except psycopg.OperationalError:
        pass
    assert p.wait_exit(10) == 0
    assert not harness.port_accepts(p.port)
