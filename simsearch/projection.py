"""A PCA projection of a feature set's vectors: the reduced copy its HNSW index is built on.

Real photo embeddings concentrate in few directions (docs/benchmark-data.md: a participation
ratio near 80 of 1280), so the top 256 principal directions keep the neighbourhoods: an exact
search in the 256-d copy, re-ranked by the exact full distance over 100 candidates, finds the
true ten nearest (recall 1.000 on real crops and on the realistic 100,000 set). An index on that
copy is about a fifth of the full one's size and builds several times faster; every answer is
still ranked by the exact float32 distance. Pure NumPy: fitted from a sample, applied to rows
and queries alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import config


@dataclass(frozen=True)
class Projection:
    mean: np.ndarray  # float32 [D]
    components: np.ndarray  # float32 [d, D], orthonormal rows, largest variance first

    @property
    def dimension(self) -> int:
        return int(self.components.shape[0])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Reduced copies, float32 [N, d] (or [d] for one vector)."""
        centred = np.asarray(vectors, np.float32) - self.mean
        return np.ascontiguousarray(centred @ self.components.T, dtype=np.float32)


def wanted(dimension: int) -> bool:
    """Whether a feature set of this dimension is indexed on a reduced copy."""
    return dimension > config.REDUCED_DIMENSION


def check(projection: Projection, sample: np.ndarray, queries: int = 100, k: int = 10) -> float:
    """The recall@k a reduced index could reach at best on this data: for ``queries`` rows of
    ``sample`` held out, the share of their exact k nearest (among the other rows) found by
    taking the config.CANDIDATES nearest in the reduced space and re-ranking them exactly.

    Data whose neighbourhoods live in few directions (photo embeddings) scores 1.0; data spread
    evenly over hundreds (bench/datagen.py's stress set) scores far less, and keeps the full
    index.
    """
    rows = np.asarray(sample, np.float32)
    held, pool = rows[:queries], rows[queries:]
    if len(pool) < max(k, config.CANDIDATES):
        return 1.0
    reduced_pool = projection.apply(pool)
    found = 0
    for query in held:
        exact = np.argsort(np.linalg.norm(pool - query, axis=1), kind="stable")[:k]
        near = np.linalg.norm(reduced_pool - projection.apply(query), axis=1)
        candidates = np.argpartition(near, config.CANDIDATES - 1)[: config.CANDIDATES]
        reranked = candidates[np.argsort(np.linalg.norm(pool[candidates] - query, axis=1))[:k]]
        found += len(set(exact.tolist()) & set(reranked.tolist()))
    return found / (k * len(held))


def fit(sample: np.ndarray, dimension: int = config.REDUCED_DIMENSION) -> Projection:
    """The top ``dimension`` principal directions of ``sample`` [N, D] (N rows of the set)."""
    rows = np.asarray(sample, np.float32)
    mean = rows.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred = rows - mean
    # The D x D covariance's eigenvectors: cheaper than an SVD of N x D when N >> D. Single
    # precision halves the product's cost and is ample for ranking directions.
    covariance = (centred.T @ centred).astype(np.float64)
    _, vectors = np.linalg.eigh(covariance)
    components = vectors[:, ::-1][:, :dimension].T
    return Projection(mean.astype(np.float32), np.ascontiguousarray(components, np.float32))
