"""PostgreSQL's binary COPY format for embedding rows. Pure: arrays in, bytes out.

Encoding with NumPy is about ten times faster than psycopg's per-row ``write_row`` with
pgvector's Python dumper, and ingest spends most of its client time here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)


def embedding_rows(
    feature_set_id: int, shard_id: int, object_ids: Sequence[str], features: np.ndarray
) -> bytes:
    """Rows (feature_set_id, object_id, shard_id, embedding) in binary COPY format."""
    dimension = features.shape[1]
    fixed_head = struct.pack(">hii", 4, 4, feature_set_id)
    shard_field = struct.pack(">ii", 4, shard_id)
    # pgvector's binary form: int16 dimension, int16 unused, then big-endian float32 values.
    vector_head = struct.pack(">iHH", 4 + 4 * dimension, dimension, 0)
    vectors = memoryview(np.ascontiguousarray(features, dtype=">f4").tobytes())
    width = 4 * dimension
    parts: list[bytes | memoryview] = [_SIGNATURE]
    for row, object_id in enumerate(object_ids):
        encoded = object_id.encode("utf-8")
        parts.append(fixed_head)
        parts.append(struct.pack(">i", len(encoded)))
        parts.append(encoded)
        parts.append(shard_field)
        parts.append(vector_head)
        parts.append(vectors[row * width : (row + 1) * width])
    parts.append(_TRAILER)
    return b"".join(parts)
