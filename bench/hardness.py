"""How hard a vector set is for a nearest-neighbour index, measured from its held-out queries.

- relative contrast: a query's mean distance to the set over its nearest distance. Near 1,
  every point is about as far as every other and no index can tell them apart (isotropic
  noise in high dimension); real embeddings have a clear nearest neighbour.
- local intrinsic dimension: the MLE (Levina-Bickel) from a query's 20 nearest distances; how
  many directions the neighbourhood really spreads in. Graph indexes degrade as it grows.
- the nearest-distance distribution (percentiles), and the share of exact zeros (ReLU output).
- participation ratio of the stored set's covariance, (sum l)^2 / sum l^2: how many
  directions carry the variance overall.

Each figure is given for all queries and, where it differs, for queries showing photos the
set does not hold (the hard ones). ``python -m bench.hardness`` prints the side-by-side table:
the real crops, generated sets of the same size and the clustered stress set.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import datasets, photos, realistic

K = 20  # neighbours for the intrinsic-dimension estimate


@dataclass(frozen=True)
class Hardness:
    name: str
    rows: int
    queries: int
    new_queries: int
    contrast: float
    contrast_new: float
    lid: float
    lid_new: float
    nearest: tuple[float, float, float]  # p10, p50, p90 of the nearest distance
    participation: float
    zeros: float


def neighbour_stats(
    features: np.ndarray, queries: np.ndarray, k: int = K
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k nearest distances (exact, ascending) and its mean distance to the set."""
    norms = np.einsum("ij,ij->i", features, features)
    nearest = np.empty((len(queries), k), np.float64)
    means = np.empty(len(queries), np.float64)
    width = min(4 * k, len(features) - 1)
    for start in range(0, len(queries), 64):
        block = queries[start : start + 64]
        # |x|^2 - 2 q.x + |q|^2 for the mean and a shortlist; exact differences for the top k,
        # since the expansion is noisy exactly for the small distances that matter.
        squared = norms[None, :] - 2.0 * (block @ features.T)
        squared += np.einsum("ij,ij->i", block, block)[:, None]
        means[start : start + len(block)] = np.sqrt(np.maximum(squared, 0.0)).mean(axis=1)
        shortlist = np.argpartition(squared, width, axis=1)[:, : width + 1]
        for i, (q, rows) in enumerate(zip(block, shortlist, strict=True)):
            diff = features[rows].astype(np.float64) - q
            dist = np.sort(np.sqrt(np.einsum("ij,ij->i", diff, diff)))
            nearest[start + i] = dist[:k]
    return nearest, means


def lid_mle(nearest: np.ndarray) -> np.ndarray:
    """Levina-Bickel estimate per query from its ascending k nearest distances (NaN when the
    neighbourhood has zero distances and no estimate exists)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(nearest[:, :-1] / nearest[:, -1:])
        estimate = -1.0 / logs.mean(axis=1)
    estimate[~np.isfinite(estimate) | (nearest[:, 0] <= 0)] = np.nan
    return estimate


def participation_ratio(features: np.ndarray, sample: int = 20_000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    rows = features[rng.choice(len(features), min(sample, len(features)), replace=False)]
    centred = rows.astype(np.float64) - rows.mean(axis=0)
    values = np.linalg.eigvalsh(centred.T @ centred / max(len(rows) - 1, 1))
    return float(values.sum() ** 2 / (values**2).sum())


def measure(data: datasets.Dataset) -> Hardness:
    nearest, means = neighbour_stats(data.features, data.queries)
    with np.errstate(divide="ignore"):
        contrast = np.where(nearest[:, 0] > 0, means / nearest[:, 0], np.nan)
    lid = lid_mle(nearest)
    new = data.query_new
    return Hardness(
        name=data.name,
        rows=len(data.features),
        queries=len(data.queries),
        new_queries=int(new.sum()),
        contrast=float(np.nanmean(contrast)),
        contrast_new=float(np.nanmean(contrast[new])) if new.any() else float("nan"),
        lid=float(np.nanmean(lid)),
        lid_new=float(np.nanmean(lid[new])) if new.any() else float("nan"),
        nearest=tuple(float(v) for v in np.percentile(nearest[:, 0], [10, 50, 90])),  # type: ignore[arg-type]
        participation=participation_ratio(data.features),
        zeros=float((data.features == 0).mean()),
    )


def table(rows: Sequence[Hardness]) -> str:
    head = (
        "| set | rows | queries (new photos) | relative contrast, all / new photos "
        "| local intrinsic dim. (MLE, k=20), all / new | nearest distance p10 / p50 / p90 "
        "| participation ratio | zeros |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for h in rows:
        p10, p50, p90 = h.nearest
        lines.append(
            f"| {h.name} | {h.rows:,} | {h.queries} ({h.new_queries}) "
            f"| {h.contrast:.2f} / {h.contrast_new:.2f} | {h.lid:.1f} / {h.lid_new:.1f} "
            f"| {p10:.2f} / {p50:.2f} / {p90:.2f} | {h.participation:.0f} | {h.zeros:.0%} |"
        )
    return "\n".join(lines)


def side_by_side(
    real: datasets.Dataset,
    model: realistic.Model,
    views: float,
    extra_rows: Sequence[int] = (),
) -> list[Hardness]:
    """The real crops beside generated sets of the same size and query mix (``views`` per
    photo like the real crops, and mostly distinct photos) and the clustered stress set; then
    the mostly-distinct generated set and the clustered set again at each of ``extra_rows``."""
    n, q = len(real.features), len(real.queries)
    dim = real.features.shape[1]
    new_share = float(real.query_new.mean())
    sets = [
        real,
        datasets.generated_like(model, n, q, views, new_share),
        datasets.generated_like(model, n, q, 3.0, new_share),
        datasets.clustered_like(n, q, dim),
    ]
    for rows in extra_rows:
        sets.append(datasets.generated_like(model, rows, q, 3.0, new_share))
        sets.append(datasets.clustered_like(rows, q, dim))
    return [measure(s) for s in sets]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hardness", description=__doc__)
    parser.add_argument("--data", type=Path, default=photos.DATA)
    parser.add_argument(
        "--rows", type=int, nargs="*", default=[], help="also measure generated sets this big"
    )
    args = parser.parse_args(argv)
    model, _ = realistic.ensure_model(args.data)
    crops, _ = photos.ensure(data=args.data)
    real = datasets.real(args.data)
    views = len(crops.stored_photo) / len(np.unique(crops.stored_photo))
    print(table(side_by_side(real, model, views, args.rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
