"""COPY FROM STDIN / TO STDOUT through the pooler, and a client that vanishes in the middle of a
COPY IN."""

import pytest

import harness


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_copy_in_and_out(pooler_factory, pg, mode):
    """10000 rows COPY'd in and read back with COPY TO STDOUT, identical."""
    table = f"copy_{mode}"
    pg.create_table(table)
    p = pooler_factory(settings={"pool_mode": mode})
    rows = [(i, f"value {i} \t with tab") for i in range(10000)]
    with p.connect() as c:
        with c.cursor().copy(f"COPY {table} (id, val) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        assert c.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == len(rows)
        got = []
        with c.cursor().copy(f"COPY {table} (id, val) TO STDOUT") as cp:
            for r in cp.rows():
                got.append((int(r[0]), r[1]))
        assert sorted(got) == rows
        # the connection is usable afterwards
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_copy_in_error_is_reported(pooler_factory, pg):
    """A COPY IN that PostgreSQL rejects (bad data) returns the server's error and the
    connection stays usable."""
    pg.create_table("copy_bad", "id int")
    p = pooler_factory()
    r = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    r.send(harness.query_message("COPY copy_bad FROM STDIN"))
    tag, _ = r.read_message()
    assert tag == b"G"
    r.send(harness.message(b"d", b"not a number\n") + harness.message(b"c"))
    with pytest.raises(harness.ServerError) as ei:
        r.read_result()
    assert ei.value.sqlstate == "22P02"
    assert r.query("SELECT 5") == [("5",)]


def test_client_vanishes_mid_copy_in(pooler_factory, pg):
    """A client sends part of a COPY IN and drops the connection: nothing is committed, and the
    next client on that single server is not inside a transaction or a COPY."""
    pg.create_table("copy_abort")
    p = pooler_factory(settings={"default_pool_size": "1"})
    r = harness.RawClient(p.port).startup("md5user", "appdb", "md5pass")
    r.send(harness.query_message("COPY copy_abort FROM STDIN"))
    tag, _ = r.read_message()
    assert tag == b"G"
    r.send(harness.message(b"d", b"1\tone\n2\ttwo\n"))
    r.abort()
    with p.connect() as c:
        row = c.execute("SELECT count(*), now() = statement_timestamp() FROM copy_abort"
                        ).fetchone()
        assert row == (0, True)
        assert c.info.transaction_status.name == "IDLE"
        # the pool still has at most its one server (reused or replaced), and it works
        assert len(pg.backends(user="md5user", dbname="appdb")) <= 1
        c.execute("INSERT INTO copy_abort VALUES (3, 'three')")
    assert pg.query("SELECT count(*) FROM copy_abort", dbname="appdb")[0][0] == 1
