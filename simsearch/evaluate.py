"""``simsearch eval``: how often the default (ANN) query path returns the exact answer.

Stored vectors serve as queries (a sample, seeded so runs compare), each answered twice: by the
query path users get (HNSW on half precision, re-ranked exactly) and by the exact scan. Recall@k
is the share of the exact top k that the default path also returns; latencies are per query,
inside one warm connection, so they measure the database and not process start-up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import config
from .db import connect, feature_sets, knn
from .errors import FeatureSetError


@dataclass(frozen=True)
class Setting:
    """One point of the recall/latency curve."""

    ef_search: int
    candidates: int
    recall: float  # mean over the sample of |ann top k & exact top k| / k
    worst: float  # the lowest single-query recall
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True)
class Evaluation:
    feature_set: str
    rows: int
    indexed: bool
    index_params: dict[str, object] | None
    sample: int
    k: int
    exact_p50_ms: float
    exact_p95_ms: float
    settings: list[Setting]
    held_out: bool = False

    def lines(self) -> list[str]:
        index = (
            f"HNSW m={self.index_params.get('m')} "
            f"ef_construction={self.index_params.get('ef_construction')}"
            if self.indexed and self.index_params
            else "none: every query scans exactly"
        )
        out = [
            f"feature set {self.feature_set}: {self.rows:,} rows, index {index}",
            f"{self.sample} stored vectors as queries"
            + (", each left out of its own results (held out)" if self.held_out else "")
            + f", recall@{self.k} against the exact scan",
            f"{'ef_search':>9} {'candidates':>10} {'recall':>7} {'worst':>6} "
            f"{'p50 ms':>8} {'p95 ms':>8}",
        ]
        for s in self.settings:
            out.append(
                f"{s.ef_search:>9} {s.candidates:>10} {s.recall:>7.3f} {s.worst:>6.2f} "
                f"{s.p50_ms:>8.1f} {s.p95_ms:>8.1f}"
            )
        out.append(
            f"{'exact':>9} {'-':>10} {1.0:>7.3f} {1.0:>6.2f} "
            f"{self.exact_p50_ms:>8.1f} {self.exact_p95_ms:>8.1f}"
        )
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "feature_set": self.feature_set,
            "rows": self.rows,
            "indexed": self.indexed,
            "index_params": self.index_params,
            "sample": self.sample,
            "k": self.k,
            "exact": {"p50_ms": self.exact_p50_ms, "p95_ms": self.exact_p95_ms},
            "settings": [s.__dict__ for s in self.settings],
            "held_out": self.held_out,
        }


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else float("nan")


def evaluate(
    feature_set: str | None = None,
    sample: int = 100,
    k: int = 10,
    ef_search: Sequence[int] = (config.EF_SEARCH,),
    candidates: int | None = None,
    seed: int = 0,
    held_out: bool = False,
) -> Evaluation:
    """Recall@k and latency of the default query path for each ``ef_search``, on stored vectors.

    ``held_out``: each query vector's own row is left out of both answers, so the query stands
    for a new photo of the collection rather than one the index holds (an easier query: the
    index finds a vector it stores at distance 0 on the first steps of its walk).
    """
    if sample < 1 or k < 1:
        raise FeatureSetError(f"expected --sample and -k of at least 1, found {sample} and {k}")
    with connect.connect(read_only=True) as conn:
        fs = feature_sets.resolve(conn, feature_set)
        rows = feature_sets.row_count(conn, fs)
        if rows == 0:
            raise FeatureSetError(
                f"feature set {fs.name!r} holds no vectors yet; nothing to evaluate"
            )
        ids, queries = feature_sets.sample_rows(conn, fs, sample, seed)
        left_out = ids if held_out else [None] * len(ids)
        exact_ms: list[float] = []
        truth: list[set[str]] = []
        for vector, own in zip(queries, left_out, strict=True):
            started = time.perf_counter()
            found = knn.knn(conn, fs, vector, k, exact=True, exclude=own)
            exact_ms.append((time.perf_counter() - started) * 1000)
            truth.append({m.object_id for m in found})
        settings = []
        for ef in ef_search:
            pool = candidates if candidates is not None else max(config.CANDIDATES, k)
            recalls, times = [], []
            for vector, own, expected in zip(queries, left_out, truth, strict=True):
                started = time.perf_counter()
                found = knn.knn(conn, fs, vector, k, ef_search=ef, candidates=pool, exclude=own)
                times.append((time.perf_counter() - started) * 1000)
                recalls.append(len(expected & {m.object_id for m in found}) / max(len(expected), 1))
            settings.append(
                Setting(
                    ef,
                    max(min(pool, ef), k),
                    float(np.mean(recalls)),
                    float(min(recalls)),
                    percentile(times, 50),
                    percentile(times, 95),
                )
            )
    return Evaluation(
        fs.name,
        rows,
        fs.indexed,
        fs.index_params,
        len(queries),
        k,
        percentile(exact_ms, 50),
        percentile(exact_ms, 95),
        settings,
        held_out,
    )
