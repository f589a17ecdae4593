"""The exact NumPy scan over shards on disk: the reference every database answer is held to.

The origin's algorithm: Euclidean distance from the query to every row of each shard, the
shard's top n, then the top n of all shards' candidates. Vectorised; one shard in memory. No
database is involved, which is what makes it a reference (``simsearch scan``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from . import config
from .model import Overrides, load_model
from .results import Match
from .shards import Shard, iter_shards, list_shards


def nearest(features: np.ndarray, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indexes and distances of the n rows nearest to ``query``, nearest first."""
    # Subtract, then square: the expansion |f|^2 - 2 f.q + |q|^2 loses the small distances
    # that matter most (a near-duplicate at 0.39 would come out noisy, itself not as 0.0).
    diff = features - query.astype(np.float32, copy=False)
    distances = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    n = min(n, len(distances))
    top = np.argpartition(distances, n - 1)[:n] if n < len(distances) else np.arange(n)
    order = top[np.lexsort((top, distances[top]))]
    return order, distances[order]


def exact_scan(shards: Iterable[Shard], query: np.ndarray, n: int) -> list[Match]:
    """The n stored vectors nearest to ``query`` over all shards, nearest first."""
    if n < 1:
        return []
    candidates: list[Match] = []
    for shard in shards:
        indexes, distances = nearest(shard.features, query, n)
        candidates.extend(
            Match(shard.object_ids[i], float(d))
            for i, d in zip(indexes.tolist(), distances.tolist(), strict=True)
        )
    return heapq.nsmallest(n, candidates, key=lambda match: match.distance)


def scan(
    feature_dir: Path,
    image: Path,
    n: int = config.RESULTS,
    model: str | None = None,
    overrides: Overrides | None = None,
) -> list[Match]:
    """``simsearch scan``: embed ``image`` and scan the shards in ``feature_dir`` exactly."""
    listing = list_shards(feature_dir)
    chosen = load_model(model or config.model_path(), overrides)
    (vector,) = chosen.embed_files([image])
    return exact_scan(iter_shards(listing, dimension=len(vector)), vector, n)
