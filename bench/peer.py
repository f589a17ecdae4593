"""The peer every figure is compared with: hnswlib on the same vectors, and the NumPy exact scan.

hnswlib (a bench-only dependency: ``pip install -e '.[bench]'``) is the reference HNSW
implementation; built with simsearch's parameters (M=16, ef_construction=64) it says what the
algorithm itself reaches on a data set, so pgvector's figures can be read as a ratio to it.
The exact NumPy scan (simsearch's reference) is the floor every index must beat on latency.

``python -m bench.peer --data realistic --rows 100000`` builds it and prints its curve.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import datasets, photos

EFS = (10, 40, 100, 200, 400)


@dataclass(frozen=True)
class Point:
    ef: int
    recall: float
    recall_new: float  # over queries showing photos the set does not hold (NaN: none)
    zero_share: float  # share of queries with none of their true ten found
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True)
class PeerResult:
    build_s: float
    curve: list[Point]
    exact_p50_ms: float
    exact_p95_ms: float


def exact_top(features: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Row indexes of each query's exact top k, nearest first (ties by row)."""
    norms = np.einsum("ij,ij->i", features, features)
    width = min(10 * k, len(features) - 1)
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 64):
        block = queries[start : start + 64]
        # The Gram expansion only shortlists; exact differences rank, since it is noisy for
        # exactly the small distances that decide the top k.
        shortlist = np.argpartition(norms[None, :] - 2.0 * (block @ features.T), width, axis=1)
        for i, (q, rows) in enumerate(zip(block, shortlist[:, : width + 1], strict=True)):
            diff = features[rows] - q
            dist = np.einsum("ij,ij->i", diff, diff)
            out[start + i] = rows[np.lexsort((rows, dist))][:k]
    return out


def recall_at(
    features: np.ndarray, queries: np.ndarray, found: np.ndarray, truth: np.ndarray
) -> np.ndarray:
    """Per query: the share of its k found rows that are as near as its true k-th neighbour.

    Counting by distance, not by row, so that ties do not count as misses: real crops hold
    exact duplicates (the same flat crop of two photos), and which of them is "the" tenth
    is arbitrary."""
    out = np.empty(len(queries))
    for i, (q, rows, want) in enumerate(zip(queries, found, truth, strict=True)):
        kth = _squared(features[want[-1:]], q)[0]
        near = _squared(features[rows[rows >= 0]], q) <= kth * (1 + 1e-6)
        out[i] = min(int(near.sum()), len(want)) / len(want)
    return out


def _squared(rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    diff = rows - q  # computed exactly as in exact_top, so a tie compares equal
    return np.einsum("ij,ij->i", diff, diff)


def exact_latency(features: np.ndarray, queries: np.ndarray) -> tuple[float, float]:
    """p50 and p95 ms of one query by the exact scan, simsearch's reference algorithm."""
    times = []
    for q in queries:
        started = time.perf_counter()
        diff = features - q
        distances = np.einsum("ij,ij->i", diff, diff)
        top = np.argpartition(distances, 10)[:10]
        _ranked = top[np.argsort(distances[top])]  # the scan returns them in order
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def hnsw(
    features: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    efs: Sequence[int] = EFS,
    m: int = 16,
    ef_construction: int = 64,
    threads: int = 2,
    exact_queries: int = 20,
    new: np.ndarray | None = None,
) -> PeerResult:
    """Build hnswlib on ``features`` and measure recall@10 and latency per ef, one query at a
    time (as a user's search runs), against ``truth`` from :func:`exact_top`."""
    import hnswlib

    index = hnswlib.Index(space="l2", dim=features.shape[1])
    started = time.perf_counter()
    index.init_index(max_elements=len(features), M=m, ef_construction=ef_construction)
    index.set_num_threads(threads)
    index.add_items(features, np.arange(len(features)))
    build_s = time.perf_counter() - started
    index.set_num_threads(1)
    new = np.zeros(len(queries), bool) if new is None else new
    curve = [_point(index, ef, features, queries, truth, new) for ef in efs]
    p50, p95 = exact_latency(features, queries[:exact_queries])
    return PeerResult(build_s, curve, p50, p95)


def _point(
    index: object,
    ef: int,
    features: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    new: np.ndarray,
) -> Point:
    index.set_ef(max(ef, truth.shape[1]))  # type: ignore[attr-defined]
    found, times = [], []
    for q in queries:
        started = time.perf_counter()
        labels, _ = index.knn_query(q, k=truth.shape[1])  # type: ignore[attr-defined]
        times.append((time.perf_counter() - started) * 1000)
        found.append(labels[0])
    recalls = recall_at(features, queries, np.array(found), truth)
    return Point(
        ef,
        float(recalls.mean()),
        float(recalls[new].mean()) if new.any() else float("nan"),
        float((recalls == 0).mean()),
        float(np.percentile(times, 50)),
        float(np.percentile(times, 95)),
    )


def table(result: PeerResult) -> str:
    lines = [
        f"hnswlib build (M=16, ef_construction=64, 2 threads): {result.build_s:.1f} s; "
        f"NumPy exact scan: p50 {result.exact_p50_ms:.1f} ms, p95 {result.exact_p95_ms:.1f} ms",
        "",
        "| ef | recall@10 | new photos only | queries at recall 0 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for p in result.curve:
        lines.append(
            f"| {p.ef} | {p.recall:.3f} | {p.recall_new:.3f} | {p.zero_share:.1%} "
            f"| {p.p50_ms:.2f} | {p.p95_ms:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__)
    parser.add_argument("--data", choices=datasets.KINDS, default="realistic")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--cache", type=Path, default=photos.DATA)
    parser.add_argument("--model", type=Path, help="a fitted realistic model (bench.realistic)")
    args = parser.parse_args(argv)
    data = datasets.load(args.data, args.rows, args.queries, args.cache, model=args.model)
    truth = exact_top(data.features, data.queries)
    result = hnsw(data.features, data.queries, truth, new=data.query_new)
    print(f"{data.name}, {len(data.features):,} x {data.features.shape[1]}, {args.queries} queries")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
