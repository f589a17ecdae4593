"""Feature sets' PCA projections (``simsearch/projection.py``): storing, reading, backfilling.

A projection is fitted once, when the first large load or the first index build of a
high-dimensional feature set needs it, and kept for the feature set's life: every row's reduced
copy (``embeddings.reduced``) is made with it, at load time or by ``backfill``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import config
from ..errors import DatabaseError
from ..projection import Projection, check, fit, wanted
from . import pgcopy
from .feature_sets import Connection, FeatureSet, sample_vectors

# Fewer stored rows than this and a PCA says little about the set: the index stays full-size.
MIN_FIT_ROWS = 4 * config.REDUCED_DIMENSION
_BACKFILL_BATCH = 5_000
# (database, feature set id, fitted_at) -> projection: read once per process, not per query.
_cache: dict[tuple[str, int, str], Projection] = {}


def load(conn: Connection, fs: FeatureSet) -> Projection | None:
    """The feature set's projection, or None when it has none (or keeps the full index)."""
    row: Any = conn.execute(
        "SELECT fitted_at::text, used FROM projections WHERE feature_set_id = %s",
        [fs.id],
        prepare=True,
    ).fetchone()
    return None if row is None or not row[1] else _cached(conn, fs, row[0])


def decided(conn: Connection, fs: FeatureSet) -> bool:
    """Whether the feature set has had a projection fitted and checked (used or not)."""
    row = conn.execute("SELECT 1 FROM projections WHERE feature_set_id = %s", [fs.id]).fetchone()
    return row is not None


def for_index(conn: Connection, fs: FeatureSet) -> Projection:
    """The projection the feature set's index was built with: what its queries are reduced
    by. Its fitting time travels in index_params, so a warm process reads nothing more."""
    fitted_at = (fs.index_params or {}).get("projection")
    found = _cached(conn, fs, str(fitted_at)) if fitted_at else load(conn, fs)
    if found is None:
        raise DatabaseError(f"feature set {fs.name!r}: its reduced index has no projection")
    return found


def fitted_at(conn: Connection, fs: FeatureSet) -> str | None:
    row: Any = conn.execute(
        "SELECT fitted_at::text FROM projections WHERE feature_set_id = %s", [fs.id]
    ).fetchone()
    return None if row is None else str(row[0])


def _cached(conn: Connection, fs: FeatureSet, fitted: str) -> Projection:
    key = (conn.info.dsn, fs.id, fitted)
    if key not in _cache:
        found: Any = conn.execute(
            "SELECT mean, components FROM projections WHERE feature_set_id = %s", [fs.id]
        ).fetchone()
        mean = np.asarray(found[0].to_numpy(), np.float32)
        components = np.stack([np.asarray(c.to_numpy(), np.float32) for c in found[1]])
        _cache[key] = Projection(mean, components)
    return _cache[key]


def save(
    conn: Connection, fs: FeatureSet, projection: Projection, rows: int, recall: float
) -> None:
    conn.execute(
        """INSERT INTO projections
             (feature_set_id, mean, components, fitted_rows, check_recall, used)
           VALUES (%s, %s, %s, %s, %s, %s)
           ON CONFLICT (feature_set_id) DO UPDATE SET mean = EXCLUDED.mean,
             components = EXCLUDED.components, fitted_rows = EXCLUDED.fitted_rows,
             check_recall = EXCLUDED.check_recall, used = EXCLUDED.used, fitted_at = now()""",
        [
            fs.id,
            projection.mean,
            list(projection.components),
            rows,
            recall,
            recall >= config.PROJECTION_MIN_RECALL,
        ],
    )


def ensure(conn: Connection, fs: FeatureSet, sample: np.ndarray | None = None) -> Projection | None:
    """The feature set's projection, fitted and checked now (from ``sample`` or stored rows)
    when it is high-dimensional, has enough rows, and was never decided; None when it keeps
    the full index (too few rows so far, or a check that found the reduced copy loses recall)."""
    if not wanted(fs.dimension) or decided(conn, fs):
        return load(conn, fs)
    if sample is None:
        sample = np.asarray(sample_vectors(conn, fs, config.PROJECTION_SAMPLE), np.float32)
    if len(sample) < MIN_FIT_ROWS:
        return None
    # Shuffled, so the rows held out by the check are not all of the first shard's photos.
    sample = np.random.default_rng(0).permutation(sample)
    projection = fit(sample)
    save(conn, fs, projection, len(sample), check(projection, sample))
    return load(conn, fs)


def backfill(conn: Connection, fs: FeatureSet, projection: Projection) -> int:
    """Give every row of the feature set without a reduced copy one; rows written."""
    written, last = 0, ""
    while True:
        rows = conn.execute(
            """SELECT object_id, embedding FROM embeddings
               WHERE feature_set_id = %s AND object_id > %s AND reduced IS NULL
               ORDER BY object_id LIMIT %s""",
            [fs.id, last, _BACKFILL_BATCH],
        ).fetchall()
        if not rows:
            return written
        ids = [row[0] for row in rows]
        reduced = projection.apply(np.stack([row[1].to_numpy() for row in rows]))
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE reduced_batch (object_id text, reduced halfvec) ON COMMIT DROP"
            )
            with conn.cursor().copy(
                "COPY reduced_batch (object_id, reduced) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(pgcopy.reduced_rows(ids, reduced))
            conn.execute(
                """UPDATE embeddings e SET reduced = b.reduced FROM reduced_batch b
                   WHERE e.feature_set_id = %s AND e.object_id = b.object_id""",
                [fs.id],
            )
        written += len(ids)
        last = ids[-1]
