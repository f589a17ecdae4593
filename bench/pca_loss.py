"""How much recall a PCA projection loses, before any index is involved.

An index on a reduced copy of the vectors (PCA to d dimensions) would be smaller and faster to
build; searches would take its top K and re-rank them by the exact full distance. Here the
search in the reduced space is exact, so the figure is the projection's loss alone: recall@10
of "top K by distance in PCA-d space, re-ranked by exact 1280-d distance" against the exact
top ten. The PCA is fitted on (a sample of) the stored vectors, as an index would be.

``python -m bench.pca_loss --rows 100000`` prints the table for the realistic set and the
real crops.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import datasets, peer, photos

DIMS = (64, 128, 256)
CANDIDATES = (40, 100, 200)


def fit_pca(features: np.ndarray, dims: int, sample: int = 50_000, seed: int = 0) -> np.ndarray:
    """The top ``dims`` principal directions ([dim, dims]) of a sample of the stored rows."""
    rng = np.random.default_rng(seed)
    rows = features[rng.choice(len(features), min(sample, len(features)), replace=False)]
    centred = rows.astype(np.float64) - rows.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return np.ascontiguousarray(vectors[:, ::-1][:, :dims], np.float32)


def reranked_recall(
    features: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    basis: np.ndarray,
    candidates: Sequence[int],
) -> dict[int, float]:
    """Mean recall@10 per K of exact-in-PCA-space top K re-ranked by exact full distance.
    (Centring is left out: it shifts every projected point alike and changes no distance.)"""
    projected = features @ basis
    norms = np.einsum("ij,ij->i", projected, projected)
    k_max = min(max(candidates), len(features))
    found: dict[int, list[np.ndarray]] = {k: [] for k in candidates}
    for q in queries:
        p = q @ basis
        reduced = norms - 2.0 * (projected @ p)
        top = np.argpartition(reduced, k_max - 1)[:k_max]
        top = top[np.argsort(reduced[top], kind="stable")]
        for k in candidates:
            rows = top[:k]
            diff = features[rows] - q
            best = rows[np.argsort(np.einsum("ij,ij->i", diff, diff), kind="stable")[:10]]
            found[k].append(best)
    return {
        k: float(peer.recall_at(features, queries, np.array(v), truth).mean())
        for k, v in found.items()
    }


def measure(
    data: datasets.Dataset, dims: Sequence[int] = DIMS, candidates: Sequence[int] = CANDIDATES
) -> dict[int, dict[int, float]]:
    truth = peer.exact_top(data.features, data.queries)
    full = fit_pca(data.features, max(dims))
    return {
        d: reranked_recall(data.features, data.queries, truth, full[:, :d], candidates)
        for d in dims
    }


def table(results: dict[str, dict[int, dict[int, float]]]) -> str:
    candidates = sorted(next(iter(next(iter(results.values())).values())))
    head = "| set | PCA d | " + " | ".join(f"recall@10, K={k}" for k in candidates) + " |"
    lines = [head, "|---|---|" + "---|" * len(candidates)]
    for name, by_dim in results.items():
        for d, by_k in sorted(by_dim.items()):
            cells = " | ".join(f"{by_k[k]:.3f}" for k in candidates)
            lines.append(f"| {name} | {d} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pca_loss", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--cache", type=Path, default=photos.DATA)
    args = parser.parse_args(argv)
    sets = [
        datasets.load("realistic", args.rows, args.queries, args.cache),
        datasets.real(args.cache),
    ]
    results = {f"{s.name}, {len(s.features):,}": measure(s) for s in sets}
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
