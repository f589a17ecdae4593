"""The shard ledger and loading shards: one shard and its ledger row per transaction.

The ledger (table ``shards``) records what each loaded shard's files held (name, rows, sha256)
and how many of its rows were deleted since, so a re-run skips what is loaded and never brings
back what was deleted.
"""

from __future__ import annotations

import numpy as np
from psycopg import sql

from ..errors import ShardError
from ..shards import Shard
from . import pgcopy
from .feature_sets import SEQUENTIAL, Connection, FeatureSet

_INGEST_LOCK = 7_411_002  # pg_advisory_xact_lock(key, feature_set_id): one loader per feature set


def loaded_shards(conn: Connection, fs: FeatureSet) -> dict[str, str]:
    """Shard name -> sha256 of what was loaded."""
    rows = conn.execute(
        "SELECT name, sha256 FROM shards WHERE feature_set_id = %s", [fs.id]
    ).fetchall()
    return dict(rows)


def load_shard(
    conn: Connection,
    fs: FeatureSet,
    shard: Shard,
    replace: bool,
    reduced: np.ndarray | None = None,
) -> str:
    """Store one shard and its ledger row in one transaction: 'loaded', 'replaced' or 'skipped'.

    ``reduced``: the rows' PCA copies (``Projection.apply``), stored beside them when the
    feature set has a projection.
    """
    with conn.transaction():
        # Serialise loaders of one feature set, so two ingests of a directory never interleave.
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_INGEST_LOCK, fs.id])
        # A crash may lose the last shards committed, but with their ledger rows (same
        # transaction), so a re-run loads them again; not waiting for each WAL flush is safe.
        conn.execute("SET LOCAL synchronous_commit = off")
        # On Citus: the ledger is a reference table the embeddings refer to; Citus allows
        # writing both in one transaction over one connection per node only.
        conn.execute(SEQUENTIAL)
        previous = conn.execute(
            "SELECT id, sha256 FROM shards WHERE feature_set_id = %s AND name = %s",
            [fs.id, shard.name],
        ).fetchone()
        outcome = "loaded"
        if previous is not None:
            if previous[1] == shard.sha256:
                return "skipped"
            if not replace:
                raise ShardError(
                    f"shard {shard.name}: its files changed since they were loaded into "
                    f"{fs.name!r}; use --replace to load the new contents"
                )
            conn.execute("DELETE FROM shards WHERE id = %s", [previous[0]])  # cascades to rows
            outcome = "replaced"
        refuse_stored_ids(conn, fs, shard)
        shard_id = conn.execute(
            """INSERT INTO shards (feature_set_id, name, sha256, rows)
               VALUES (%s, %s, %s, %s) RETURNING id""",
            [fs.id, shard.name, shard.sha256, shard.rows],
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO images (object_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
            [shard.object_ids],
        )
        data = pgcopy.embedding_rows(fs.id, shard_id, shard.object_ids, shard.features, reduced)
        columns = "feature_set_id, object_id, shard_id, embedding" + (
            "" if reduced is None else ", reduced"
        )
        with conn.cursor().copy(
            sql.SQL("COPY embeddings ({}) FROM STDIN (FORMAT BINARY)").format(sql.SQL(columns))
        ) as copy:
            copy.write(data)
    return outcome


def refuse_stored_ids(conn: Connection, fs: FeatureSet, shard: Shard) -> None:
    """Raise ShardError if any of the shard's ids is already stored in the feature set."""
    clash = conn.execute(
        """SELECT e.object_id, s.name FROM embeddings e LEFT JOIN shards s ON s.id = e.shard_id
           WHERE e.feature_set_id = %s AND e.object_id = ANY(%s)
             AND s.name IS DISTINCT FROM %s  -- a shard being replaced may keep its own ids
           LIMIT 1""",
        [fs.id, shard.object_ids, shard.name],
    ).fetchone()
    if clash is not None:
        where = f"shard {clash[1]}" if clash[1] else "an earlier load"
        raise ShardError(
            f"shard {shard.name}: object id {clash[0]!r} is already stored in {fs.name!r} "
            f"from {where}; expected ids unique across shards"
        )
