"""Synthetic feature shards in the origin's format: clustered, non-negative, reproducible.

Pooled CNN features are ReLU outputs averaged over space: non-negative, and spread over a
manifold of far lower dimension than 1280. Each vector here is a cluster centre plus a
low-rank latent variation plus a little isotropic noise, clipped at zero. Isotropic noise
alone would make every neighbour equidistant (no image model gives that), and such data is
a test of the curse of dimensionality, not of the index.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 20_260_101


@dataclass(frozen=True)
class Spec:
    rows: int
    dimension: int
    shard_rows: int
    clusters: int
    latent: int = 24
    seed: int = SEED

    @property
    def shards(self) -> int:
        return -(-self.rows // self.shard_rows)

    @property
    def name(self) -> str:
        return f"clustered-{self.rows}x{self.dimension}-{self.shard_rows}-s{self.seed}"


class Generator:
    """Draws vectors from one fixed distribution; shard i is the same bytes on every run."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        d = spec.dimension
        # Sparse-ish non-negative centres, like channel means of a ReLU network.
        shape = (spec.clusters, d)
        self.centres = (rng.gamma(0.6, 0.5, shape) * (rng.random(shape) < 0.6)).astype(np.float32)
        # A latent basis per cluster group: neighbours differ along a few directions.
        self.bases = (rng.standard_normal((8, spec.latent, d)) * 0.12).astype(np.float32)
        self.noise = 0.02

    def draw(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        labels = rng.integers(0, self.spec.clusters, rows)
        z = rng.standard_normal((rows, self.spec.latent)).astype(np.float32)
        out = np.empty((rows, self.spec.dimension), np.float32)
        for group in range(len(self.bases)):
            mask = labels % len(self.bases) == group
            out[mask] = z[mask] @ self.bases[group]
        out += self.centres[labels]
        out += rng.standard_normal(out.shape, dtype=np.float32) * self.noise
        np.maximum(out, 0.0, out=out)
        return out

    def shard(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.spec.seed, index + 1])
        start = index * self.spec.shard_rows
        rows = min(self.spec.shard_rows, self.spec.rows - start)
        ids = np.array([_object_id(self.spec.seed, start + i) for i in range(rows)])
        return ids, self.draw(rng, rows)

    def queries(self, count: int) -> np.ndarray:
        """Vectors from the same distribution that are not stored: a new photo each."""
        return self.draw(np.random.default_rng([self.spec.seed, 0]), count)


def _object_id(seed: int, row: int) -> str:
    # The origin's ids: the SHA-1 of the image file plus its extension.
    return hashlib.sha1(f"bench-{seed}-{row}".encode()).hexdigest() + ".jpg"


def write_shard(folder: Path, number: int, ids: np.ndarray, features: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{number:04d}.object_ids.npy", ids)
    np.save(folder / f"{number:04d}.features.npy", features)


def ensure(root: Path, spec: Spec, extra: int = 1) -> tuple[Path, Path]:
    """The spec's shards under ``root`` (made once, then cached), and ``extra`` more full shards
    in a second directory (same distribution, ids numbered after the main set's).

    Other benchmarks (bench_server, bench_filters) use this too: keep its signature.
    """
    main = root / spec.name
    more = root / f"{spec.name}-extra{extra}"
    n = spec.shards
    _make(main, spec, [(i, spec.shard_rows) for i in range(n)])
    _make(more, spec, [(n + i, spec.shard_rows) for i in range(extra)])
    return main, more


def ensure_trickle(root: Path, spec: Spec) -> Path:
    """One shard of a tenth of the shard size, for inserting into an indexed feature set."""
    trickle = root / f"{spec.name}-trickle"
    _make(trickle, spec, [(spec.shards + 100, max(spec.shard_rows // 10, 1))])
    return trickle


def _make(folder: Path, spec: Spec, shards: list[tuple[int, int]]) -> None:
    if (folder / "complete").exists():
        return
    gen = Generator(spec)
    for number, rows in shards:
        if number < spec.shards:
            write_shard(folder, number, *gen.shard(number))
            continue
        rng = np.random.default_rng([spec.seed, number + 1])
        start = number * spec.shard_rows
        ids = np.array([_object_id(spec.seed, start + i) for i in range(rows)])
        write_shard(folder, number, ids, gen.draw(rng, rows))
    (folder / "complete").write_text("ok\n")


def read_all(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    ids, feats = [], []
    for path in sorted(folder.glob("*.object_ids.npy")):
        ids.append(np.load(path))
        feats.append(np.load(str(path).replace(".object_ids.npy", ".features.npy")))
    return np.concatenate(ids), np.concatenate(feats)
