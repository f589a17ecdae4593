"""Realistic benchmark vectors: a generator fitted to real embeddings of real photo crops.

Real CNN embeddings concentrate in few directions, and the crops of one photo vary along
about eight of them (see bench/hardness.py for the measures). The fit keeps, from the cached
real crops (bench/photos.py): the global mean, each stored photo's mean, its top principal
directions scaled by their spread, and the spread left over. A new photo's centre borrows a
random real photo's offset from the global mean, shrunk by sqrt(1 - h^2), plus h times a draw
from the between-photo covariance (so the covariance is kept and new photos are not copies);
each view of it is the centre plus a Gaussian along the donor's directions plus leftover
noise, clipped at zero like ReLU features. Views per photo are geometric: mean 3 by default
("mostly distinct photos"), or about as many as the real crops per photo.

The fitted model is saved (npz), so generation needs no images or model. Shard i is the same
bytes on every run and does not depend on the others: photos never span two shards.
``python -m bench.realistic --rows 1000000`` writes the shards (about a minute a million).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import datagen, photos

SEED = 20_261_202
RANK = 8  # per-photo principal directions kept: real crops vary along about eight
H = 0.7  # weight of the fresh draw in a new photo's centre


@dataclass(frozen=True)
class Model:
    """What the generator needs, fitted once from real crops."""

    mean: np.ndarray  # [dim]
    centres: np.ndarray  # [photos, dim]: each real photo's mean
    directions: np.ndarray  # [photos, RANK, dim], unit rows
    spreads: np.ndarray  # [photos, RANK]: std along each direction
    leftover: np.ndarray  # [photos]: per-coordinate std of what the directions leave

    @property
    def dimension(self) -> int:
        return int(self.mean.shape[0])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, **self.__dict__)
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> Model:
        with np.load(path) as data:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def fit(vectors: np.ndarray, photo: np.ndarray, rank: int = RANK) -> Model:
    """Fit the model to stored crops ``vectors`` labelled by ``photo``."""
    vectors = np.asarray(vectors, np.float32)
    labels = np.unique(photo)
    dim = vectors.shape[1]
    centres = np.empty((len(labels), dim), np.float32)
    directions = np.zeros((len(labels), rank, dim), np.float32)
    spreads = np.zeros((len(labels), rank), np.float32)
    leftover = np.zeros(len(labels), np.float32)
    for i, label in enumerate(labels):
        rows = vectors[photo == label].astype(np.float64)
        centres[i] = rows.mean(axis=0)
        centred = rows - centres[i]
        _, values, vt = np.linalg.svd(centred, full_matrices=False)
        variance = values**2 / max(len(rows) - 1, 1)
        kept = min(rank, len(variance))
        directions[i, :kept] = vt[:kept]
        spreads[i, :kept] = np.sqrt(variance[:kept])
        leftover[i] = np.sqrt(variance[kept:].sum() / dim)
    return Model(vectors.mean(axis=0), centres, directions, spreads, leftover)


@dataclass(frozen=True)
class Spec:
    rows: int
    shard_rows: int = 10_000
    views: float = 3.0  # mean views per photo (geometric): 3 = mostly distinct photos
    h: float = H
    seed: int = SEED

    @property
    def shards(self) -> int:
        return -(-self.rows // self.shard_rows)

    def name(self, model_key: str) -> str:
        views = f"{self.views:g}".replace(".", "_")
        return f"realistic-{model_key}-{self.rows}-{self.shard_rows}-v{views}-s{self.seed}"


@dataclass(frozen=True)
class Photos:
    """The photos of one shard (or of the queries): donor and centre of each."""

    donors: np.ndarray  # [photos] index into the model's photos
    centres: np.ndarray  # [photos, dim]


class Generator:
    def __init__(self, model: Model, spec: Spec) -> None:
        self.model = model
        self.spec = spec
        offsets = model.centres - model.mean
        # Rows of B with B^T B = the between-photo covariance: z @ B draws from it.
        self.between = (offsets / np.sqrt(max(len(offsets) - 1, 1))).astype(np.float32)
        self.offsets = offsets.astype(np.float32)

    def new_photos(self, rng: np.random.Generator, count: int) -> Photos:
        donors = rng.integers(0, len(self.model.centres), count)
        z = rng.standard_normal((count, len(self.between)), dtype=np.float32)
        shrink = np.float32(np.sqrt(1.0 - self.spec.h**2))
        centres = self.model.mean + shrink * self.offsets[donors] + self.spec.h * (z @ self.between)
        return Photos(donors, centres.astype(np.float32))

    def views(self, rng: np.random.Generator, photos: Photos, which: np.ndarray) -> np.ndarray:
        """One view of photo ``which[i]`` per row: centre + low-rank variation + noise, >= 0."""
        m = self.model
        donors = photos.donors[which]
        out = photos.centres[which].copy()
        z = rng.standard_normal((len(which), m.spreads.shape[1]), dtype=np.float32)
        noise = rng.standard_normal(out.shape, dtype=np.float32)
        # Group rows by donor: one small matmul per donor instead of a [rows, RANK, dim] gather.
        order = np.argsort(donors, kind="stable")
        cuts = np.flatnonzero(np.diff(donors[order])) + 1
        for rows in np.split(order, cuts):
            if len(rows):
                d = donors[rows[0]]
                out[rows] += (z[rows] * m.spreads[d]) @ m.directions[d]
        out += noise * m.leftover[donors][:, None]
        np.maximum(out, 0.0, out=out)
        return out

    def shard_photos(self, index: int) -> tuple[Photos, np.ndarray]:
        """The shard's photos and, for each of its rows, which photo it shows."""
        rows = min(self.spec.shard_rows, self.spec.rows - index * self.spec.shard_rows)
        rng = np.random.default_rng([self.spec.seed, index + 1, 0])
        counts = rng.geometric(1.0 / max(self.spec.views, 1.0), rows)
        counts = counts[: int(np.searchsorted(np.cumsum(counts), rows)) + 1]
        which = np.repeat(np.arange(len(counts)), counts)[:rows]
        return self.new_photos(rng, len(counts)), which

    def shard(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        photos_, which = self.shard_photos(index)
        rng = np.random.default_rng([self.spec.seed, index + 1, 1])
        start = index * self.spec.shard_rows
        ids = np.array([_object_id(self.spec.seed, start + i) for i in range(len(which))])
        return ids, self.views(rng, photos_, which)

    def queries(self, count: int, new_share: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
        """Held-out query vectors and whether each shows a new photo: the rest are new views
        of stored photos (a re-framed or re-saved copy of something in the set)."""
        rng = np.random.default_rng([self.spec.seed, 0])
        new = rng.random(count) < new_share
        out = np.empty((count, self.model.dimension), np.float32)
        fresh = self.new_photos(rng, int(new.sum()))
        out[new] = self.views(rng, fresh, np.arange(int(new.sum())))
        shards = rng.integers(0, self.spec.shards, int((~new).sum()))
        seen = np.flatnonzero(~new)
        for shard in np.unique(shards):
            stored, which = self.shard_photos(int(shard))
            targets = seen[shards == shard]
            picks = which[rng.integers(0, len(which), len(targets))]
            out[targets] = self.views(rng, stored, picks)
        return out, new


def _object_id(seed: int, row: int) -> str:
    # The origin's ids: the SHA-1 of the image file plus its extension.
    return hashlib.sha1(f"realistic-{seed}-{row}".encode()).hexdigest() + ".jpg"


def ensure_model(data: Path = photos.DATA, fitted: Path | None = None) -> tuple[Model, str]:
    """The fitted model and a key naming it: ``fitted`` when given (a saved :class:`Model`),
    else the one fitted from the cached real crops (embedding them first if needed)."""
    if fitted is not None:
        return Model.load(fitted), hashlib.sha1(fitted.read_bytes()).hexdigest()[:12]
    crops, path = photos.ensure(data=data)
    key = path.stem.removeprefix("real-crops-")
    fitted = data / f"realistic-model-{key}.npz"
    if not fitted.exists():
        fit(crops.stored, crops.stored_photo).save(fitted)
    return Model.load(fitted), key


def ensure(root: Path, spec: Spec, model: Model, key: str) -> Path:
    """The spec's shards under ``root``, made once (then cached) in the origin's format."""
    folder = root / spec.name(key)
    if (folder / "complete").exists():
        return folder
    gen = Generator(model, spec)
    for index in range(spec.shards):
        datagen.write_shard(folder, index, *gen.shard(index))
    (folder / "complete").write_text("ok\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.realistic", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--views", type=float, default=3.0, help="mean views per photo")
    parser.add_argument("--data", type=Path, default=photos.DATA)
    parser.add_argument("--model", type=Path, help="a fitted model (default: fit the real crops)")
    args = parser.parse_args(argv)
    model, key = ensure_model(args.data, args.model)
    spec = Spec(args.rows, views=args.views)
    started = time.perf_counter()
    folder = ensure(args.data, spec, model, key)
    print(f"{folder}: {spec.rows:,} x {model.dimension} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
