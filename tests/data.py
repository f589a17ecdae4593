"""Test data made on the spot: real image files and shards in the origin's format."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Images with shapes and gradients (so features differ), named by SHA-1 as the origin's."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        width, height = int(rng.integers(64, 200)), int(rng.integers(64, 200))
        base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        colour = rng.integers(0, 256, 3).astype(np.float32)
        pixels = (base * 0.5 + colour * 0.5) * np.ones((height, 1, 1), np.float32)
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, width - 10)), int(rng.integers(0, height - 10))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.ellipse(
                [x0, y0, x0 + int(rng.integers(5, 60)), y0 + int(rng.integers(5, 60))], fill=fill
            )
        suffix = ".png" if i % 2 else ".jpg"
        tmp = folder / f"tmp{suffix}"
        image.save(tmp, quality=90) if suffix == ".jpg" else image.save(tmp)
        digest = hashlib.sha1(tmp.read_bytes()).hexdigest()
        path = folder / f"{digest}{suffix}"
        tmp.rename(path)
        paths.append(path)
    return paths


def write_shards(
    folder: Path,
    ids: Sequence[str],
    features: np.ndarray,
    *,
    extra_rows: int = 0,
    seed: int = 0,
    sizes: Sequence[int] | None = None,
    skip: Sequence[int] = (),
) -> Path:
    """Shuffle real rows with random ones and write them as shards of the given sizes.

    Shard numbers in ``skip`` are left out, so the directory has a gap there.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    dimension = features.shape[1]
    scale = float(np.abs(features).mean()) or 1.0
    noise = (rng.standard_normal((extra_rows, dimension)) * scale).astype(np.float32)
    all_ids = np.array([*ids, *(f"{rng.bytes(20).hex()}.jpg" for _ in range(extra_rows))])
    all_features = np.concatenate([features.astype(np.float32), noise])
    order = rng.permutation(len(all_ids))
    all_ids, all_features = all_ids[order], all_features[order]
    sizes = list(sizes or [len(all_ids)])
    start, number = 0, 0
    while start < len(all_ids):
        size = sizes[number % len(sizes)] if number < len(sizes) else sizes[-1]
        if number in skip:
            number += 1
        stop = min(start + size, len(all_ids))
        np.save(folder / f"{number:04d}.object_ids.npy", all_ids[start:stop])
        np.save(folder / f"{number:04d}.features.npy", all_features[start:stop])
        start, number = stop, number + 1
    return folder


def read_all(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every id and feature row in a shard directory."""
    ids, feats = [], []
    for path in sorted(folder.glob("*.object_ids.npy")):
        ids.append(np.load(path))
        feats.append(np.load(str(path).replace(".object_ids.npy", ".features.npy")))
    return np.concatenate(ids), np.concatenate(feats)
