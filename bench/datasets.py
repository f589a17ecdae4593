"""The benchmark's vector sets by name: ``realistic`` (fitted to real photo crops), ``clustered``
(bench/datagen.py's stress set) and ``real`` (the real crops themselves), each with held-out
queries, so every benchmark measures the same vectors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import datagen, photos, realistic

KINDS = ("realistic", "clustered")
DIMENSION = 1280


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: Path | None  # origin-format shards, when the set has them
    ids: np.ndarray
    features: np.ndarray
    queries: np.ndarray
    query_new: np.ndarray  # True where the query shows a photo the set does not hold


def clustered_spec(rows: int, shard_rows: int = 10_000) -> datagen.Spec:
    # bench_million's choice: clusters of about 100 vectors.
    return datagen.Spec(rows, DIMENSION, shard_rows, clusters=max(rows // 100, 10))


def shards(
    kind: str, rows: int, data: Path = photos.DATA, views: float = 3.0, model: Path | None = None
) -> tuple[str, Path]:
    """The name and shard folder of ``kind`` at ``rows`` (made once under ``data``, then cached)."""
    if kind == "clustered":
        folder, _ = datagen.ensure(data, clustered_spec(rows))
        return "clustered (datagen)", folder
    if kind == "realistic":
        fitted, key = realistic.ensure_model(data, model)
        return f"realistic (views {views:g})", realistic.ensure(
            data, realistic.Spec(rows, views=views), fitted, key
        )
    raise ValueError(f"unknown data set {kind!r}: one of {', '.join(KINDS)}")


def queries(
    kind: str,
    rows: int,
    count: int,
    data: Path = photos.DATA,
    views: float = 3.0,
    model: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out queries for the set ``shards`` makes, and which show a photo it does not hold."""
    if kind == "clustered":
        q = datagen.Generator(clustered_spec(rows)).queries(count)
        return q, np.ones(len(q), bool)
    fitted, _ = realistic.ensure_model(data, model)
    return realistic.Generator(fitted, realistic.Spec(rows, views=views)).queries(count)


def load(
    kind: str,
    rows: int,
    count: int,
    data: Path = photos.DATA,
    views: float = 3.0,
    model: Path | None = None,
) -> Dataset:
    """The set's shards read back, with its queries."""
    name, folder = shards(kind, rows, data, views, model)
    ids, features = datagen.read_all(folder)
    q, new = queries(kind, rows, count, data, views, model)
    return Dataset(name, folder, ids, features, q, new)


def real(data: Path = photos.DATA) -> Dataset:
    crops, _ = photos.ensure(data=data)
    ids = np.array([f"crop-{i}" for i in range(len(crops.stored))])
    return Dataset("real crops", None, ids, crops.stored, crops.queries, crops.query_new)


def generated_like(
    model: realistic.Model, rows: int, queries: int, views: float, new_share: float
) -> Dataset:
    """A realistic set in memory (no shards): for side-by-side comparisons at small sizes."""
    spec = realistic.Spec(rows, views=views)
    gen = realistic.Generator(model, spec)
    parts = [gen.shard(i) for i in range(spec.shards)]
    ids = np.concatenate([p[0] for p in parts])
    features = np.concatenate([p[1] for p in parts])
    q, new = gen.queries(queries, new_share)
    return Dataset(f"realistic (views {views:g})", None, ids, features, q, new)


def clustered_like(rows: int, queries: int, dimension: int = DIMENSION) -> Dataset:
    spec = datagen.Spec(rows, dimension, 10_000, clusters=max(rows // 100, 10))
    gen = datagen.Generator(spec)
    parts = [gen.shard(i) for i in range(spec.shards)]
    ids = np.concatenate([p[0] for p in parts])
    features = np.concatenate([p[1] for p in parts])
    q = gen.queries(queries)
    return Dataset("clustered (datagen)", None, ids, features, q, np.ones(len(q), bool))
