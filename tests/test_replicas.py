"""A real primary + streaming standby (pg_basebackup -R): reads scale out, and keep answering
while the primary is down; writes go only to the primary."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from clusters import StreamingPair

DIM = 16


def _literal(v: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


@pytest.fixture(scope="module")
def table(replicas: StreamingPair) -> str:
    with psycopg.connect(replicas.primary_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS replicated (object_id text PRIMARY KEY, "
            f"embedding vector({DIM}) NOT NULL)"
        )
    return "replicated"


def test_the_standby_is_a_standby(replicas: StreamingPair) -> None:
    with psycopg.connect(replicas.standby_url) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        row = conn.execute("SELECT status, sender_port FROM pg_stat_wal_receiver").fetchone()
        assert row == ("streaming", replicas.primary.port)
    with psycopg.connect(replicas.primary_url) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone() == (1,)


def test_rows_written_on_the_primary_are_read_on_the_standby(
    replicas: StreamingPair, table: str
) -> None:
    vectors = np.random.default_rng(5).standard_normal((300, DIM)).astype(np.float32)
    with psycopg.connect(replicas.primary_url) as conn:
        with conn.cursor().copy(f"COPY {table} (object_id, embedding) FROM STDIN") as copy:
            for i, v in enumerate(vectors):
                copy.write_row((f"w{i:03d}.jpg", _literal(v)))
        conn.execute(f"CREATE INDEX ON {table} USING hnsw (embedding vector_l2_ops)")
    replicas.wait_replayed()
    q = vectors[123] + 0.001
    with psycopg.connect(replicas.standby_url) as conn:
        assert conn.execute(
            f"SELECT count(*) FROM {table} WHERE object_id LIKE 'w%'"
        ).fetchone() == (300,)
        # The index came across too: the standby answers kNN with it.
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                f"EXPLAIN SELECT object_id FROM {table} ORDER BY embedding <-> %s LIMIT 5",
                (_literal(q),),
            ).fetchall()
        )
        assert f"Index Scan using {table}_embedding_idx" in plan, plan
        nearest = conn.execute(
            f"SELECT object_id FROM {table} ORDER BY embedding <-> %s LIMIT 1", (_literal(q),)
        ).fetchone()
        assert nearest == ("w123.jpg",)


def test_a_write_on_the_standby_fails_read_only(replicas: StreamingPair, table: str) -> None:
    with (
        psycopg.connect(replicas.standby_url) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="read-only transaction"),
    ):
        conn.execute(f"INSERT INTO {table} VALUES ('nope.jpg', %s)", (_literal(np.zeros(DIM)),))


def test_the_standby_answers_while_the_primary_is_down(replicas: StreamingPair, table: str) -> None:
    with psycopg.connect(replicas.primary_url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {table} VALUES ('before-crash.jpg', %s) ON CONFLICT DO NOTHING",
            (_literal(np.full(DIM, 9.0)),),
        )
    replicas.wait_replayed()
    with replicas.primary_stopped():
        assert not replicas.primary.running()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(replicas.primary_url, connect_timeout=3).close()
        with psycopg.connect(replicas.standby_url) as conn:
            nearest = conn.execute(
                f"SELECT object_id FROM {table} ORDER BY embedding <-> %s LIMIT 1",
                (_literal(np.full(DIM, 8.9)),),
            ).fetchone()
            assert nearest == ("before-crash.jpg",)
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    # Back up: the primary takes writes again and the standby follows it.
    with psycopg.connect(replicas.primary_url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {table} VALUES ('after-restart.jpg', %s) ON CONFLICT DO NOTHING",
            (_literal(np.full(DIM, -9.0)),),
        )
    replicas.wait_replayed()
    with psycopg.connect(replicas.standby_url) as conn:
        found = conn.execute(
            f"SELECT count(*) FROM {table} WHERE object_id = 'after-restart.jpg'"
        ).fetchone()
        assert found == (1,)
