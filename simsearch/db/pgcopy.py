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
    feature_set_id: int,
    shard_id: int,
    object_ids: Sequence[str],
    features: np.ndarray,
    reduced: np.ndarray | None = None,
) -> bytes:
    """Rows (feature_set_id, object_id, shard_id, embedding[, reduced]) in binary COPY format."""
    columns = 4 if reduced is None else 5
    fixed_head = struct.pack(">hii", columns, 4, feature_set_id)
    shard_field = struct.pack(">ii", 4, shard_id)
    vectors = _vector_fields(features, halfvec=False)
    halves = _vector_fields(reduced, halfvec=True) if reduced is not None else None
    parts: list[bytes | memoryview] = [_SIGNATURE]
    for row, object_id in enumerate(object_ids):
        parts.append(fixed_head)
        parts.append(_text_field(object_id))
        parts.append(shard_field)
        parts.extend(vectors(row))
        if halves is not None:
            parts.extend(halves(row))
    parts.append(_TRAILER)
    return b"".join(parts)


def reduced_rows(object_ids: Sequence[str], reduced: np.ndarray) -> bytes:
    """Rows (object_id, reduced) in binary COPY format: a backfill's staging table."""
    head = struct.pack(">h", 2)
    halves = _vector_fields(reduced, halfvec=True)
    parts: list[bytes | memoryview] = [_SIGNATURE]
    for row, object_id in enumerate(object_ids):
        parts.append(head)
        parts.append(_text_field(object_id))
        parts.extend(halves(row))
    parts.append(_TRAILER)
    return b"".join(parts)


def _text_field(text: str) -> bytes:
    encoded = text.encode("utf-8")
    return struct.pack(">i", len(encoded)) + encoded


def _vector_fields(values: np.ndarray, halfvec: bool):  # type: ignore[no-untyped-def]
    """A function of a row number giving that row's field: pgvector's binary form is an int16
    dimension, an int16 zero, then big-endian float32 (vector) or float16 (halfvec) values."""
    dimension = values.shape[1]
    width = (2 if halfvec else 4) * dimension
    head = struct.pack(">iHH", 4 + width, dimension, 0)
    data = memoryview(np.ascontiguousarray(values, dtype=">f2" if halfvec else ">f4").tobytes())

    def field(row: int) -> tuple[bytes, memoryview]:
        return head, data[row * width : (row + 1) * width]

    return field
