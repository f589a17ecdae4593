"""The search server's SQL: what it shows beside a result, and stored vectors to search by.

Kept apart from store.py because only the server needs it; the same rules hold: every value
from a request is a bound parameter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .store import Connection, FeatureSet


class ImageRow(NamedTuple):
    path: str | None  # as `simsearch index` stored it: relative to its image folder, or absolute
    width: int | None
    height: int | None
    bytes: int | None


def image_rows(conn: Connection, object_ids: list[str]) -> dict[str, ImageRow]:
    """object id -> what the images table knows about it, for the ids it holds."""
    if not object_ids:
        return {}
    rows = conn.execute(
        "SELECT object_id, path, width, height, bytes FROM images WHERE object_id = ANY(%s)",
        [object_ids],
        prepare=True,
    ).fetchall()
    conn.commit()
    return {row[0]: ImageRow(*row[1:]) for row in rows}


def stored_vector(conn: Connection, fs: FeatureSet, object_id: str) -> np.ndarray | None:
    """The vector a feature set holds for ``object_id``, or None."""
    row: Any = conn.execute(
        "SELECT embedding FROM embeddings WHERE feature_set_id = %s AND object_id = %s",
        [fs.id, object_id],
        prepare=True,
    ).fetchone()
    conn.commit()
    return None if row is None else np.asarray(row[0].to_numpy(), dtype=np.float32)
