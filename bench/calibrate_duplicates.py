"""Calibrate the near-duplicate levels of ``simsearch duplicates`` for the shipped model.

Run:  python -m bench.calibrate_duplicates [--cache DIR] [--doc docs/duplicates.md] [--no-doc]
      python -m bench.calibrate_duplicates --model OTHER.onnx   # another model's figures

What it does (docs/duplicates.md explains the method and holds the figures it writes):

1. Real photos: scikit-image's bundled samples, the nature photos of Debian's ``mate-backgrounds``
   and the sample photos of Debian's ``opencv-doc`` (both fetched with ``apt-get download`` and
   unpacked into the cache: nothing is installed, and no root is needed).
2. Positives: for every photo, the copies a collection really accumulates: re-encoded JPEG
   (quality 40, 60, 75, 95), resized (50%, 25%), cropped (5%, 10%), brightness and colour
   adjusted, and an EXIF-rotated file (pixels turned a quarter, EXIF Orientation undoing it).
3. Hard negatives: different photos of one scene. Real ones from opencv-doc (consecutive video
   frames, stereo pairs, viewpoint and lighting changes, a chessboard photographed in a burst)
   and scikit-image (the stereo motorcycle); synthesised bursts from large photos (overlapping
   views panned by 10-30% of the width with a slight zoom and rotation).
4. Every file is embedded exactly as ``simsearch index`` does it: ``simsearch embed FOLDER OUT
   --id path`` in a subprocess, with a private ``SIMSEARCH_HOME``; the shards are read back with
   NumPy. Only the perceptual hash is imported (``simsearch.duplicates.phash``, so that the
   calibration measures the very hash the command computes); other module moves inside the
   package do not break this script.
5. Precision/recall against distance; the ``strict`` (precision 0.99 on the hard negatives) and
   ``loose`` (0.95) thresholds; per-edit-kind recall; and whether a cheap second test on
   candidate pairs (a 64-bit perceptual hash, a thumbnail correlation) buys precision.

Everything made is cached (``--cache``, default ``$XDG_CACHE_HOME/simsearch-calibration``):
a re-run only recomputes the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from simsearch.duplicates.phash import hash_distance, perceptual_hash

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "duplicates.md"
FORMAT_VERSION = 1  # bump when the generated images change, so that the cache is remade

# Debian packages with real photos, and the members we take from each.
MATE_DEB = "mate-backgrounds"
MATE_DIR = "usr/share/backgrounds/mate/nature/"
OPENCV_DEB = "opencv-doc"
OPENCV_DIR = "usr/share/doc/opencv-doc/examples/data/"

SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
    "rocket", "brick", "camera", "coins", "grass", "gravel", "moon", "page", "text",
)  # fmt: skip
# opencv-doc photos that are pictures of their own (not one of a same-scene set below).
OPENCV_PHOTOS = (
    "baboon.jpg", "fruits.jpg", "messi5.jpg", "building.jpg", "butterfly.jpg", "home.jpg",
    "smarties.png", "squirrel_cls.jpg", "orange.jpg", "apple.jpg", "board.jpg",
    "starry_night.jpg",
)  # fmt: skip
# Real hard negatives: two different photos of one scene each (file names in opencv-doc).
OPENCV_SAME_SCENE = (
    ("basketball1.png", "basketball2.png", "consecutive video frames"),
    ("rubberwhale1.png", "rubberwhale2.png", "consecutive video frames"),
    ("aloeL.jpg", "aloeR.jpg", "stereo pair"),
    ("left.jpg", "right.jpg", "stereo pair"),
    ("aero1.jpg", "aero3.jpg", "viewpoint change"),
    ("graf1.png", "graf3.png", "viewpoint change"),
    ("leuvenA.jpg", "leuvenB.jpg", "lighting change"),
    ("Blender_Suzanne1.jpg", "Blender_Suzanne2.jpg", "viewpoint change (render)"),
)
# A chessboard photographed 13 times from a tripod-less hand, left and right camera: consecutive
# shots are burst-like, and left/right of one instant are a stereo pair.
CHESSBOARD = (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)

JPEG_QUALITIES = (40, 60, 75, 95)
BURST_SHIFTS = (0.10, 0.20, 0.30)  # pan between two views, in widths of the photo
MAX_SIDE = 2048  # originals are capped here: a desktop wallpaper is larger than most photos


@dataclass(frozen=True)
class Item:
    """One generated file and what it is."""

    path: str  # relative to the images folder: the object id with --id path
    item: str  # the picture it shows; edits of a photo share their original's item
    scene: str  # the scene; different items of one scene are hard negatives if listed
    kind: str  # "original", an edit kind, or the hard negative's source


@dataclass(frozen=True)
class HardPair:
    a: str
    b: str
    source: str  # "real: ..." or "synthesised: ..."


# --------------------------------------------------------------------------- sources


def cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "simsearch-calibration"


def unpack_deb(package: str, members: str, into: Path) -> Path:
    """The files under ``members`` of a Debian package, fetched with apt-get download."""
    done = into / f".{package}.done"
    if done.exists():
        return into
    into.mkdir(parents=True, exist_ok=True)
    debs = into / "debs"
    debs.mkdir(exist_ok=True)
    if not list(debs.glob(f"{package}_*.deb")):
        command = ["apt-get", "download", package]
        result = subprocess.run(command, cwd=debs, capture_output=True, text=True)
        if result.returncode != 0 and os.geteuid() == 0:
            subprocess.run(["apt-get", "update"], capture_output=True, check=False)
            result = subprocess.run(command, cwd=debs, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"apt-get download {package} failed: {result.stderr.strip()}")
    (deb,) = debs.glob(f"{package}_*.deb")
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(data.stdout)) as tar:
        wanted = [m for m in tar.getmembers() if m.name.lstrip("./").startswith(members)]
        tar.extractall(into, members=wanted, filter="data")
    deb.unlink()  # the unpacked members are the cache; the .deb is 50-100 MB
    done.touch()
    return into


def rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparency flattened onto white (as a viewer shows it)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    image = image.convert("RGB")
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def skimage_photos() -> dict[str, Image.Image]:
    from skimage import data

    photos: dict[str, Image.Image] = {}
    for name in SKIMAGE_PHOTOS:
        array = np.asarray(getattr(data, name)())
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        photos[f"skimage/{name}"] = Image.fromarray(np.ascontiguousarray(array[..., :3]))
    return photos


# --------------------------------------------------------------------------- edits


def jpeg(image: Image.Image, quality: int, **extra: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **extra)
    return buffer.getvalue()


def crop(image: Image.Image, fraction: float, centred: bool) -> Image.Image:
    """Remove ``fraction`` of each side length: evenly, or all from the top-left corner."""
    w, h = image.size
    dx, dy = round(w * fraction), round(h * fraction)
    if centred:
        return image.crop((dx // 2, dy // 2, w - (dx - dx // 2), h - (dy - dy // 2)))
    return image.crop((dx, dy, w, h))


def colour_shift(image: Image.Image) -> Image.Image:
    """Warmer and more saturated, as a photo app's filter makes it."""
    saturated = np.asarray(ImageEnhance.Color(image).enhance(1.4), dtype=np.float32)
    warm = saturated * np.array([1.08, 1.0, 0.88], np.float32) + np.array([10, 3, 0], np.float32)
    return Image.fromarray(warm.clip(0, 255).astype(np.uint8))


def exif_rotated(image: Image.Image) -> bytes:
    """A JPEG whose pixels are turned a quarter anticlockwise and whose EXIF Orientation (6:
    turn 90 degrees clockwise to display) undoes it: a decoder applying EXIF sees ``image``."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(image.transpose(Image.Transpose.ROTATE_90), 90, exif=exif.tobytes())


def edits(image: Image.Image) -> Iterator[tuple[str, bytes]]:
    """(kind, JPEG bytes) for every edited copy of one photo."""
    w, h = image.size
    yield "png-same-pixels", b""  # written as PNG by the caller: the same pixels, another file
    for quality in JPEG_QUALITIES:
        yield f"jpeg-q{quality}", jpeg(image, quality)
    for percent in (50, 25):
        size = (max(1, w * percent // 100), max(1, h * percent // 100))
        yield f"resize-{percent}%", jpeg(image.resize(size, Image.Resampling.LANCZOS), 90)
    yield "crop-5%", jpeg(crop(image, 0.05, centred=True), 90)
    yield "crop-10%", jpeg(crop(image, 0.10, centred=False), 90)
    yield "brighter+25%", jpeg(ImageEnhance.Brightness(image).enhance(1.25), 90)
    yield "darker-20%", jpeg(ImageEnhance.Brightness(image).enhance(0.80), 90)
    yield "colour", jpeg(colour_shift(image), 90)
    yield "exif-rotated", exif_rotated(image)


def burst_views(image: Image.Image, seed: int) -> list[tuple[float, Image.Image]]:
    """Overlapping views of one large photo as a burst or a panning shot makes them: each view
    is 65% of the width, panned by 0, 10, 20 and 30% of the width, with a slight zoom (up to 6%)
    and a slight rotation (up to 2 degrees). Returns (pan, view)."""
    rng = np.random.default_rng(seed)
    w, h = image.size
    vw, vh = round(w * 0.65), round(h * 0.80)
    views: list[tuple[float, Image.Image]] = []
    for pan in (0.0, *BURST_SHIFTS):
        zoom = 1.0 + float(rng.uniform(0.0, 0.06)) if pan else 1.0
        angle = float(rng.uniform(-2.0, 2.0)) if pan else 0.0
        cw, ch = round(vw / zoom), round(vh / zoom)
        cx = round(w * 0.025 + w * pan + (vw - cw) / 2)
        cy = round((h - ch) / 2 + float(rng.uniform(-0.03, 0.03)) * h)
        turned = image.rotate(angle, Image.Resampling.BICUBIC, center=(cx + cw / 2, cy + ch / 2))
        view = turned.crop((cx, cy, cx + cw, cy + ch)).resize((vw, vh), Image.Resampling.LANCZOS)
        views.append((pan, view))
    return views


# --------------------------------------------------------------------------- the dataset


def build(cache: Path) -> tuple[Path, list[Item], list[HardPair]]:
    """Write every file into ``cache/images`` once; return the folder, the items and the pairs."""
    images = cache / "images"
    labels = cache / "labels.json"
    if labels.exists():
        saved = json.loads(labels.read_text())
        if saved.get("version") == FORMAT_VERSION:
            items = [Item(**x) for x in saved["items"]]
            return images, items, [HardPair(**x) for x in saved["hard"]]
    shutil.rmtree(images, ignore_errors=True)
    sources = cache / "sources"
    unpack_deb(MATE_DEB, MATE_DIR, sources)
    unpack_deb(OPENCV_DEB, OPENCV_DIR, sources)
    mate = sorted((sources / MATE_DIR).glob("*.jpg"))
    opencv = sources / OPENCV_DIR

    photos = skimage_photos()
    for path in mate:
        photos[f"mate/{path.stem}"] = Image.open(path)
    for name in OPENCV_PHOTOS:
        photos[f"opencv/{Path(name).stem}"] = Image.open(opencv / name)

    items: list[Item] = []
    hard: list[HardPair] = []

    def write(relative: str, data: bytes | Image.Image, item: str, scene: str, kind: str) -> str:
        target = images / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Image.Image):
            data.save(target)
        else:
            target.write_bytes(data)
        items.append(Item(relative, item, scene, kind))
        return relative

    for name, raw in photos.items():
        image = rgb(raw)
        write(f"positives/{name}/original.jpg", jpeg(image, 92), name, name, "original")
        for kind, data in edits(image):
            if kind == "png-same-pixels":
                # The original's decoded pixels saved losslessly: what "exact" must catch.
                decoded = Image.open(io.BytesIO(jpeg(image, 92))).convert("RGB")
                write(f"positives/{name}/{kind}.png", decoded, name, name, kind)
            else:
                write(f"positives/{name}/{kind}.jpg", data, name, name, kind)

    # Synthesised bursts from the large photos (the wallpapers: 1280-2560 px wide).
    for seed, path in enumerate(mate):
        scene = f"mate/{path.stem}"
        views = burst_views(rgb(Image.open(path)), seed)
        names = [
            write(f"burst/{path.stem}/pan{round(pan * 100):02d}.jpg", jpeg(v, 90), f"{scene}@{pan}",
                  scene, "burst view")
            for pan, v in views
        ]  # fmt: skip
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                shift = round((views[j][0] - views[i][0]) * 100)
                hard.append(HardPair(names[i], names[j], f"synthesised: burst, pan {shift}%"))

    # Real same-scene photos.
    def real(a_name: str, b_name: str, source: str, scene: str) -> None:
        pair = []
        for file_name in (a_name, b_name):
            relative = f"same-scene/{Path(file_name).stem}.jpg"
            if not (images / relative).exists():
                image = rgb(Image.open(opencv / file_name))
                write(relative, jpeg(image, 92), f"opencv/{file_name}", scene, "same scene")
            pair.append(relative)
        hard.append(HardPair(pair[0], pair[1], f"real: {source}"))

    for a, b, source in OPENCV_SAME_SCENE:
        real(a, b, source, f"opencv/{a}")
    for i, n in enumerate(CHESSBOARD):
        real(f"left{n:02d}.jpg", f"right{n:02d}.jpg", "stereo pair", "opencv/chessboard")
        if i:
            prev = CHESSBOARD[i - 1]
            real(f"left{prev:02d}.jpg", f"left{n:02d}.jpg", "burst", "opencv/chessboard")
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    for side, array in (("left", left), ("right", right)):
        write(f"same-scene/motorcycle_{side}.jpg", jpeg(Image.fromarray(array), 92),
              f"skimage/motorcycle_{side}", "skimage/motorcycle", "same scene")  # fmt: skip
    hard.append(
        HardPair("same-scene/motorcycle_left.jpg", "same-scene/motorcycle_right.jpg",
                 "real: stereo pair")
    )  # fmt: skip

    labels.write_text(
        json.dumps(
            {
                "version": FORMAT_VERSION,
                "items": [asdict(x) for x in items],
                "hard": [asdict(x) for x in hard],
            }
        )
    )
    return images, items, hard


def embed(cache: Path, images: Path, model: str | None = None) -> dict[str, np.ndarray]:
    """Every file's vector, embedded by ``simsearch embed`` exactly as ``simsearch index`` does
    (with the shipped model unless ``model`` names another ONNX file)."""
    if model is None:
        out = cache / "features"
    else:
        model = str(Path(model).expanduser().resolve())
        out = cache / f"features-{hashlib.sha1(model.encode()).hexdigest()[:12]}"
    exe = Path(sys.executable).with_name("simsearch")
    env = dict(os.environ, SIMSEARCH_HOME=str(cache / "home"))
    started = time.perf_counter()
    command = ["nice", "-n", "10", str(exe), "embed", str(images), str(out), "--id", "path"]
    if model is not None:
        command += ["--model", model]
    subprocess.run(command, env=env, check=True)
    print(f"  (simsearch embed: {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    vectors: dict[str, np.ndarray] = {}
    for ids_file in sorted(out.glob("*.object_ids.npy")):
        features = np.load(ids_file.with_name(ids_file.name.replace("object_ids", "features")))
        for object_id, vector in zip(np.load(ids_file), features, strict=True):
            vectors[str(object_id)] = vector
    return vectors


# --------------------------------------------------------------------------- verification


def gray_thumbnail(path: Path, size: int) -> np.ndarray:
    """The file's picture (EXIF applied) as a size x size grey array, box-filtered."""
    with Image.open(path) as image:
        image.draft("L", (size * 4, size * 4))  # JPEG: decode at reduced scale, as index does
        upright = ImageOps.exif_transpose(image).convert("L")
        small = upright.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64)


def phash(path: Path) -> int:
    """The file's 64-bit perceptual hash, computed by the code ``simsearch duplicates`` runs."""
    with Image.open(path) as image:
        return perceptual_hash(image)


def thumb_signature(path: Path) -> np.ndarray:
    """A 16x16 grey thumbnail, zero mean, unit norm: two such dot to their correlation."""
    values = gray_thumbnail(path, 16).ravel()
    values -= values.mean()
    norm = float(np.linalg.norm(values))
    return values / norm if norm else values


# --------------------------------------------------------------------------- figures


@dataclass
class Pairs:
    distance: np.ndarray
    label: np.ndarray  # 1 positive, 0 hard negative, -1 easy negative
    kind: list[str]  # edit kind of positives, source of hard negatives, "" for easy
    a: list[str]
    b: list[str]
    scene: list[str]  # the scene of the pair's first photo (to split pairs by scene)

    def subset(self, mask: np.ndarray) -> Pairs:
        keep = np.flatnonzero(mask)
        return Pairs(
            self.distance[keep],
            self.label[keep],
            [self.kind[i] for i in keep],
            [self.a[i] for i in keep],
            [self.b[i] for i in keep],
            [self.scene[i] for i in keep],
        )


def make_pairs(items: list[Item], hard: list[HardPair], vectors: dict[str, np.ndarray]) -> Pairs:
    by_path = {x.path: x for x in items}
    paths = [x.path for x in items]
    matrix = np.stack([vectors[p] for p in paths]).astype(np.float64)
    squared = (matrix**2).sum(1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * matrix @ matrix.T, 0))
    index = {p: i for i, p in enumerate(paths)}
    rows: list[tuple[float, int, str, str, str, str]] = []
    originals = {x.item: x.path for x in items if x.kind == "original"}
    for x in items:  # positives: each edit against its original
        if x.kind not in ("original", "burst view", "same scene"):
            original = originals[x.item]
            d = distances[index[original], index[x.path]]
            rows.append((d, 1, x.kind, original, x.path, x.scene))
    for pair in hard:
        d = distances[index[pair.a], index[pair.b]]
        rows.append((d, 0, pair.source, pair.a, pair.b, by_path[pair.a].scene))
    upper_i, upper_j = np.triu_indices(len(paths), k=1)
    scenes = np.array([by_path[p].scene for p in paths])
    easy = scenes[upper_i] != scenes[upper_j]  # different scenes: every such pair
    for i, j in zip(upper_i[easy], upper_j[easy], strict=True):
        rows.append((distances[i, j], -1, "", paths[i], paths[j], str(scenes[i])))
    return Pairs(
        distance=np.array([r[0] for r in rows]),
        label=np.array([r[1] for r in rows]),
        kind=[r[2] for r in rows],
        a=[r[3] for r in rows],
        b=[r[4] for r in rows],
        scene=[r[5] for r in rows],
    )


def precision_recall(
    pairs: Pairs, threshold: float, hard_only: bool, accept: np.ndarray | None = None
) -> tuple[float, float]:
    """Precision and recall of "distance <= threshold (and accept)" over positives against the
    hard negatives (``hard_only``) or against every negative."""
    chosen = pairs.distance <= threshold
    if accept is not None:
        chosen &= accept
    positive = pairs.label == 1
    negative = pairs.label == 0 if hard_only else pairs.label <= 0
    tp = int((chosen & positive).sum())
    fp = int((chosen & negative).sum())
    return (tp / (tp + fp) if tp + fp else 1.0), tp / int(positive.sum())


@dataclass(frozen=True)
class Scale:
    """The grids and roundings of distances. The shipped model's are in its own units (1.0);
    another model's vectors have another scale, so its unit follows its copies' distances."""

    unit: float = 1.0

    @classmethod
    def of(cls, pairs: Pairs) -> Scale:
        p90 = float(np.percentile(pairs.distance[pairs.label == 1], 90))
        return cls(float(f"{p90 / SHIPPED_COPY_DISTANCE_P90:.1g}"))

    @property
    def grid(self) -> np.ndarray:
        return np.arange(0.5, GATE_SEARCH_MAX + 1e-9, 0.25) * self.unit

    @property
    def search_max(self) -> float:
        return GATE_SEARCH_MAX * self.unit

    @property
    def curve(self) -> list[float]:
        return [float(x) for x in (np.arange(1.0, 22.0, 1.0) * self.unit)]

    def round_down(self, value: float) -> float:
        step = 0.05 * self.unit
        return float(np.floor(value / step + 1e-9) * step)

    def round_up(self, value: float) -> float:
        step = 0.05 * self.unit
        return float(np.ceil(value / step - 1e-9) * step)


def number(value: float) -> str:
    """A distance as the tables show it: two decimals at the shipped model's scale."""
    return f"{value:.2f}" if value >= 0.1 or value == 0 else f"{value:.2g}"


def pick_threshold(pairs: Pairs, target: float, scale: Scale) -> float:
    """The largest distance at which precision is still >= ``target``, against the hard
    negatives and against all negatives: just below the first negative whose admission would
    drop it under the target."""
    candidates = np.unique(pairs.distance[pairs.label >= 0])
    best = 0.0
    for d in candidates:
        hard, _ = precision_recall(pairs, float(d), hard_only=True)
        overall, _ = precision_recall(pairs, float(d), hard_only=False)
        if min(hard, overall) >= target:
            best = float(d)
    # Halfway to the next pair's distance, rounded down to 0.05: a round number that keeps
    # the same pairs on each side.
    above = pairs.distance[pairs.distance > best]
    edge = (best + float(above.min())) / 2 if above.size else best
    return scale.round_down(edge)


GATE_SEARCH_MAX = 14.0  # candidate pairs up to this distance get the second test
# The shipped model's 90th percentile of copy distances (copies' distances are heavy-tailed, so
# the median says little of where the thresholds fall).
SHIPPED_COPY_DISTANCE_P90 = 5.8
HAMMING_GRID = range(0, 33)
CORRELATION_GRID = np.arange(0.50, 0.996, 0.01)
EXACT_KINDS = ("jpeg-q95", "exif-rotated")  # copies that look identical to the original


@dataclass
class Gates:
    """The second tests' values for every pair (64 / -1 where the pair was not a candidate)."""

    hamming: np.ndarray
    correlation: np.ndarray
    phash_ms: float  # cost per file
    thumb_ms: float

    def subset(self, mask: np.ndarray) -> Gates:
        return Gates(self.hamming[mask], self.correlation[mask], self.phash_ms, self.thumb_ms)


def compute_gates(pairs: Pairs, images: Path, scale: Scale) -> Gates:
    candidates = (pairs.distance <= scale.search_max) & (pairs.label >= -1)
    needed = sorted({p for i in np.flatnonzero(candidates) for p in (pairs.a[i], pairs.b[i])})
    started = time.perf_counter()
    hashes = {p: phash(images / p) for p in needed}
    phash_ms = (time.perf_counter() - started) * 1000 / max(len(needed), 1)
    started = time.perf_counter()
    thumbs = {p: thumb_signature(images / p) for p in needed}
    thumb_ms = (time.perf_counter() - started) * 1000 / max(len(needed), 1)
    hamming = np.full(len(pairs.distance), 64)
    correlation = np.full(len(pairs.distance), -1.0)
    for i in np.flatnonzero(candidates):
        hamming[i] = hash_distance(hashes[pairs.a[i]], hashes[pairs.b[i]])
        correlation[i] = float(thumbs[pairs.a[i]] @ thumbs[pairs.b[i]])
    return Gates(hamming, correlation, phash_ms, thumb_ms)


@dataclass(frozen=True)
class Rule:
    """Accept a pair when distance <= max_distance and the gate passes (if any)."""

    gate: str  # "none", "phash" (Hamming <= cut) or "thumbnail" (correlation >= cut)
    max_distance: float
    cut: float | None = None

    def accept(self, pairs: Pairs, gates: Gates, mask: np.ndarray | None = None) -> np.ndarray:
        chosen = pairs.distance <= self.max_distance
        if self.gate == "phash":
            chosen &= gates.hamming <= (self.cut or 0)
        elif self.gate == "thumbnail":
            chosen &= gates.correlation >= (self.cut or 0) - 1e-9
        return chosen if mask is None else chosen & mask

    def describe(self) -> str:
        if self.gate == "phash":
            return f"distance <= {number(self.max_distance)} and pHash Hamming <= {self.cut:.0f}"
        if self.gate == "thumbnail":
            return f"distance <= {number(self.max_distance)} and thumbnail r >= {self.cut:.2f}"
        return f"distance <= {number(self.max_distance)}"


def score(
    pairs: Pairs, gates: Gates, rule: Rule, mask: np.ndarray, hard_only: bool = True
) -> tuple[float, float]:
    """(precision, recall) of ``rule`` on the pairs in ``mask``."""
    chosen = rule.accept(pairs, gates, mask)
    positive = (pairs.label == 1) & mask
    negative = ((pairs.label == 0) if hard_only else (pairs.label <= 0)) & mask
    tp, fp = int((chosen & positive).sum()), int((chosen & negative).sum())
    return (tp / (tp + fp) if tp + fp else 1.0), tp / max(int(positive.sum()), 1)


def best_rule(
    pairs: Pairs, gates: Gates, gate: str, target: float, mask: np.ndarray, scale: Scale
) -> Rule:
    """The rule of this gate with the highest recall whose precision is at least ``target``
    both on the hard negatives and on all negatives (a loose gate far out admits different
    photos that merely look alike); ties go to the tighter rule (smaller distance, stricter
    cut)."""
    cuts: list[float | None]
    if gate == "phash":
        cuts = [float(h) for h in HAMMING_GRID]
    elif gate == "thumbnail":
        cuts = [float(r) for r in CORRELATION_GRID[::-1]]
    else:
        cuts = [None]
    # Pairs farther than any rule reaches are never admitted: leave them out of the search.
    mask = mask & (pairs.distance <= scale.grid[-1])
    pairs, gates = pairs.subset(mask), gates.subset(mask)
    mask = np.ones(len(pairs.distance), dtype=bool)
    best, best_recall = Rule(gate, 0.0, cuts[0]), -1.0
    for d in scale.grid:
        for cut in cuts:
            rule = Rule(gate, float(d), cut)
            precision, recall = score(pairs, gates, rule, mask)
            overall, _ = score(pairs, gates, rule, mask, hard_only=False)
            if min(precision, overall) >= target and recall > best_recall + 1e-12:
                best, best_recall = rule, recall
    return best


def scene_folds(pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of the pairs, split by scene (an easy negative goes with its first photo's),
    for a held-out check of fitted rules."""
    scenes = sorted({s for s, lab in zip(pairs.scene, pairs.label, strict=True) if lab >= 0})
    first = set(scenes[::2])
    in_first = np.array([s in first for s in pairs.scene])
    return in_first, ~in_first


def verification_figures(
    pairs: Pairs, gates: Gates, targets: dict[str, float], scale: Scale
) -> tuple[list[str], dict[str, dict[str, Rule]]]:
    """Does a second test on candidate pairs buy recall at equal precision? Per level, the best
    rule of each kind on all pairs, and the same search fitted on one half of the scenes and
    scored on the other (both ways round, pooled): the held-out figure is the honest one."""
    everything = pairs.label >= -1
    folds = scene_folds(pairs)
    lines = [
        "| level | test | rule (fitted on all pairs) | precision | recall | "
        "held-out precision | held-out recall |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    rules: dict[str, dict[str, Rule]] = {}
    for level, target in targets.items():
        rules[level] = {}
        for gate in ("none", "phash", "thumbnail"):
            rule = best_rule(pairs, gates, gate, target, everything, scale)
            rules[level][gate] = rule
            precision, recall = score(pairs, gates, rule, everything)
            tp = fp = pos = 0
            for fit, held in (folds, folds[::-1]):
                fitted = best_rule(pairs, gates, gate, target, fit, scale)
                chosen = fitted.accept(pairs, gates, held)
                tp += int((chosen & (pairs.label == 1)).sum())
                fp += int((chosen & (pairs.label == 0)).sum())  # precision on hard negatives
                pos += int(((pairs.label == 1) & held).sum())
            name = {"none": "vectors alone", "phash": "+ pHash", "thumbnail": "+ thumbnail"}[gate]
            lines.append(
                f"| {level} | {name} | {rule.describe()} | {precision:.3f} | {recall:.3f} | "
                f"{tp / max(tp + fp, 1):.3f} | {tp / max(pos, 1):.3f} |"
            )
    return lines, rules


def curve_table(pairs: Pairs, thresholds: dict[str, float], scale: Scale) -> list[str]:
    marks = {number(v): k for k, v in thresholds.items()}
    steps = sorted({*scale.curve, *thresholds.values()})
    lines = [
        "| distance | recall | precision vs hard negatives | hard negatives admitted | "
        "precision vs all negatives | negatives admitted |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    hard_total = int((pairs.label == 0).sum())
    for d in steps:
        p_hard, recall = precision_recall(pairs, d, hard_only=True)
        p_all, _ = precision_recall(pairs, d, hard_only=False)
        n_hard = int(((pairs.distance <= d) & (pairs.label == 0)).sum())
        n_all = int(((pairs.distance <= d) & (pairs.label <= 0)).sum())
        label = f" **{marks[number(d)]}**" if number(d) in marks else ""
        lines.append(
            f"| {number(d)}{label} | {recall:.3f} | {p_hard:.3f} | {n_hard} of {hard_total} | "
            f"{p_all:.3f} | {n_all} |"
        )
    return lines


def per_kind_table(pairs: Pairs, gates: Gates, rules: dict[str, Rule]) -> list[str]:
    kinds = sorted({k for k, lab in zip(pairs.kind, pairs.label, strict=True) if lab == 1})
    header = " | ".join(rules)
    lines = [
        f"| edit | pairs | median distance | largest distance | {header} |",
        "|---|---:|---:|---:|" + "---:|" * len(rules),
    ]
    kind_array = np.array(pairs.kind)
    for kind in kinds:
        mask = (pairs.label == 1) & (kind_array == kind)
        d = pairs.distance[mask]
        recalls = " | ".join(
            f"{int(r.accept(pairs, gates, mask).sum()) / d.size:.2f}" for r in rules.values()
        )
        lines.append(
            f"| {kind} | {d.size} | {number(np.median(d))} | {number(d.max())} | {recalls} |"
        )
    return lines


def hard_table(pairs: Pairs, gates: Gates, rules: dict[str, Rule]) -> list[str]:
    kind_array = np.array(pairs.kind)
    sources = sorted({k for k, lab in zip(pairs.kind, pairs.label, strict=True) if lab == 0})
    header = " | ".join(rules)
    lines = [
        f"| hard negative | pairs | smallest distance | median distance | {header} |",
        "|---|---:|---:|---:|" + "---:|" * len(rules),
    ]
    for source in sources:
        mask = (pairs.label == 0) & (kind_array == source)
        d = pairs.distance[mask]
        admitted = " | ".join(str(int(r.accept(pairs, gates, mask).sum())) for r in rules.values())
        lines.append(
            f"| {source} | {d.size} | {number(d.min())} | {number(np.median(d))} | {admitted} |"
        )
    return lines


def levels_table(pairs: Pairs, gates: Gates, rules: dict[str, Rule]) -> list[str]:
    lines = [
        "| level | rule | recall | precision vs hard negatives | hard negatives admitted | "
        "precision vs all negatives | negatives admitted |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    labelled = pairs.label >= -1
    hard_total = int((pairs.label == 0).sum())
    for name, rule in rules.items():
        p_hard, recall = score(pairs, gates, rule, labelled, hard_only=True)
        p_all, _ = score(pairs, gates, rule, labelled, hard_only=False)
        chosen = rule.accept(pairs, gates)
        n_hard = int((chosen & (pairs.label == 0)).sum())
        n_all = int((chosen & (pairs.label <= 0)).sum())
        lines.append(
            f"| {name} | {rule.describe()} | {recall:.3f} | {p_hard:.3f} | "
            f"{n_hard} of {hard_total} | {p_all:.3f} | {n_all} |"
        )
    return lines


def exact_distance(pairs: Pairs, scale: Scale) -> float:
    """The largest distance of a copy that looks identical (JPEG quality 95, EXIF-rotated),
    rounded up to 0.05: ``exact`` groups copies that differ in nothing a person sees."""
    kinds = np.isin(np.array(pairs.kind), EXACT_KINDS) & (pairs.label == 1)
    return scale.round_up(float(pairs.distance[kinds].max()))


# --------------------------------------------------------------------------- the report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help="where photos, edits and vectors are kept")
    parser.add_argument("--doc", default=str(DOC), help="the Markdown file to write")
    parser.add_argument("--no-doc", action="store_true", help="print the figures only")
    parser.add_argument(
        "--model", help="calibrate another ONNX model (prints its figures; implies --no-doc)"
    )
    args = parser.parse_args(argv)
    cache = cache_dir(args.cache)
    print(f"building the photo set in {cache} ...", file=sys.stderr)
    images, items, hard = build(cache)
    print(f"  {len(items)} files; embedding ...", file=sys.stderr)
    vectors = embed(cache, images, args.model)
    pairs = make_pairs(items, hard, vectors)
    print("  second tests on candidate pairs ...", file=sys.stderr)
    scale = Scale() if args.model is None else Scale.of(pairs)
    gates = compute_gates(pairs, images, scale)
    targets = {"strict": 0.99, "loose": 0.95}
    verify_lines, fitted = verification_figures(pairs, gates, targets, scale)
    thresholds = {level: pick_threshold(pairs, t, scale) for level, t in targets.items()}
    rules = {"exact": Rule("none", exact_distance(pairs, scale))}
    for level in targets:
        rules[f"{level}, vectors alone"] = Rule("none", thresholds[level])
        rules[level] = fitted[level]["phash"]
    labelled = pairs.label >= -1
    result = {
        "files": len(items),
        "originals": sum(1 for x in items if x.kind == "original"),
        "positives": int((pairs.label == 1).sum()),
        "hard_negatives": int((pairs.label == 0).sum()),
        "easy_negatives": int((pairs.label == -1).sum()),
        "png_same_pixels_max_distance": float(
            pairs.distance[np.array(pairs.kind) == "png-same-pixels"].max()
        ),
        "rules": {name: asdict(rule) for name, rule in rules.items()},
        "scores": {
            name: dict(
                zip(("precision", "recall"), score(pairs, gates, rule, labelled), strict=True)
            )
            for name, rule in rules.items()
        },
        "phash_ms": gates.phash_ms,
        "thumb_ms": gates.thumb_ms,
    }
    if args.model is None:
        (cache / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    tables = {
        "curve": curve_table(pairs, thresholds, scale),
        "levels": levels_table(pairs, gates, rules),
        "kinds": per_kind_table(pairs, gates, rules),
        "hard": hard_table(pairs, gates, rules),
        "verify": verify_lines,
    }
    for name, lines in tables.items():
        print(f"\n{name}:\n" + "\n".join(lines))
    if not args.no_doc and args.model is None:
        Path(args.doc).write_text(render_doc(result, tables))
        print(f"wrote {args.doc}", file=sys.stderr)
    return 0


def render_doc(result: dict[str, Any], tables: dict[str, list[str]]) -> str:
    """docs/duplicates.md: the method in words, the figures of this run in tables."""
    rules, scores = result["rules"], result["scores"]

    def rule(name: str) -> str:
        return Rule(**rules[name]).describe()

    def fig(name: str, what: str) -> str:
        return f"{scores[name][what]:.3f}"

    values = {
        **{k: v for k, v in result.items() if not isinstance(v, dict)},
        **{f"{k}_table": "\n".join(v) for k, v in tables.items()},
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "png_max": f"{result['png_same_pixels_max_distance']:.2f}",
        "phash_ms": f"{result['phash_ms']:.1f}",
        "thumb_ms": f"{result['thumb_ms']:.1f}",
        "skimage": len(SKIMAGE_PHOTOS),
        "opencv": len(OPENCV_PHOTOS),
        "mate": result["originals"] - len(SKIMAGE_PHOTOS) - len(OPENCV_PHOTOS),
    }
    for name in rules:
        key = name.replace(", vectors alone", "_vectors")
        values[f"{key}_rule"] = rule(name)
        values[f"{key}_precision"] = fig(name, "precision")
        values[f"{key}_recall"] = fig(name, "recall")
        values[f"{key}_distance"] = f"{rules[name]['max_distance']:.2f}"
        cut = rules[name]["cut"]
        values[f"{key}_cut"] = "-" if cut is None else f"{cut:.0f}"
    values["summary_table"] = "\n".join(
        [
            "| level | a pair is a duplicate when | recall | precision vs same-scene shots "
            "| vectors alone (files unreadable) |",
            "|---|---|---:|---:|---|",
            *(
                f"| `{level}` | {rule(level)} | {fig(level, 'recall')} | "
                f"{fig(level, 'precision')} | {rule(alone)} (recall {fig(alone, 'recall')}, "
                f"precision {fig(alone, 'precision')}) |"
                for level, alone in (
                    ("exact", "exact"),
                    ("strict", "strict, vectors alone"),
                    ("loose", "loose, vectors alone"),
                )
            ),
        ]
    )
    return DOC_TEMPLATE.format(**values)


DOC_TEMPLATE = """\
# Near-duplicate levels: how they were calibrated

`simsearch duplicates --level exact|strict|loose` groups copies of one photo. The levels are
presets for the shipped model (EfficientNet-Lite0, 1280-d vectors, Euclidean distance), measured
on real photos by `python -m bench.calibrate_duplicates`, which also wrote the figures on this
page ({date}). The numbers live in `simsearch/duplicates/grouping.py` (`LEVELS`).

{summary_table}

*Distance* is the Euclidean distance between the two photos' vectors; *pHash Hamming* is the
number of bits in which the two files' 64-bit perceptual hashes differ
(`simsearch/duplicates/phash.py`). Groups are then formed by complete linkage: every two members
of a group are a duplicate pair, so a group never chains (A like B, B like C, A unlike C).

**The short story.** The vectors alone cannot tell an edited copy from a second shot of the same
scene well: at precision 0.99 against same-scene shots they find only
{strict_vectors_recall} of the copies, because a copy cropped by 10%, shrunk to a quarter or
colour-shifted moves as far in the vector space as a photo panned by 10%. A cheap second test on
the candidate pairs pays: a 64-bit perceptual hash (about {phash_ms} ms a file, once per file)
raises recall at the same precision to {strict_recall} (`strict`) and {loose_recall} (`loose`).
Held out (rules fitted on half the scenes, scored on the other half) the gain holds, at a
precision a few points lower than fitted; see [Verification](#verification-does-a-second-test-pay).

## Method

**Photos** ({originals} originals, {files} files in all):
{skimage} of scikit-image's bundled sample photos (astronaut, chelsea, coffee, rocket, ...;
greyscale ones as RGB), the {mate} nature photos of Debian's `mate-backgrounds`
(1280-2560 px wide), and {opencv} photos from Debian's `opencv-doc` sample data (baboon, fruits,
building, butterfly, ...). The Debian packages are fetched with `apt-get download` and unpacked
into the cache; nothing is installed. Originals are capped at 2048 px and saved as JPEG quality
92.

**Positives** ({positives} pairs): each original against each of its 13 edited copies:
re-encoded as JPEG quality 40, 60, 75 and 95; resized to 50% and 25% (Lanczos); cropped by 5%
(evenly) and 10% (from the top-left corner); brightness +25% and -20%; a colour filter
(saturation x1.4, warmer); an EXIF-rotated file (pixels turned a quarter, EXIF Orientation 6
turning them back, so a decoder that applies EXIF sees the original); and the original's decoded
pixels saved as PNG (the same pixels in another file).

**Hard negatives** ({hard_negatives} pairs): different photos of one scene.
- *Real*, 35 pairs: from `opencv-doc`, consecutive video frames (`basketball1/2`,
  `rubberwhale1/2`), stereo pairs (`aloeL/R`, `left/right`, and the chessboard's left and right
  cameras at 13 instants), viewpoint changes (`aero1/3`, `graf1/3`, `Blender_Suzanne1/2`, a
  render), a lighting change (`leuvenA/B`), and a burst: the chessboard's 13 consecutive shots
  from one camera (12 pairs); from scikit-image, the stereo motorcycle (left and right views).
- *Synthesised*, 72 pairs: bursts made from each of the 12 large nature photos: four views of
  65% x 80% of the photo, panned by 0, 10, 20 and 30% of its width, the panned ones zoomed by up
  to 6% and rotated by up to 2 degrees; every two views of a photo are a pair (pan difference 10,
  20 or 30%).

**Easy negatives** ({easy_negatives} pairs): every two files of different scenes.

**Embedding** exactly as `simsearch index` does it: `simsearch embed FOLDER OUT --id path` in a
subprocess with a private `SIMSEARCH_HOME`, the shipped model and its default preprocessing
(draft JPEG decoding included); the shards are read back with NumPy.

**Figures.** A rule (distance <= d, optionally pHash Hamming <= h) admits pairs. Recall is the
share of positives admitted; precision is positives admitted / all pairs admitted, counted against
the hard negatives alone ("vs same-scene shots") or against every negative. Precision depends on
the mix: here {positives} positives against {hard_negatives} hard negatives, so one admitted
same-scene pair costs about 0.2 points of precision near 0.99. `strict` is the rule with the
highest recall whose precision is at least 0.99 both against the hard negatives and against all
negatives; `loose` the same at 0.95; vectors-alone thresholds are set halfway between the last
admitted pair and the next (rounded down to 0.05). `exact` is the largest distance of a copy that
looks identical (JPEG quality 95, EXIF-rotated), rounded up to 0.05.

## Precision and recall against distance (vectors alone)

{curve_table}

## The levels

{levels_table}

## Recall by edit

{kinds_table}

What the table shows:
- **EXIF rotation and JPEG quality 95 are nearly free** (distance about 0.5); quality 40 moves a
  photo about as far as brightness +25%.
- **The same pixels in a PNG are up to {png_max} away**: `simsearch index` decodes JPEGs at
  reduced scale (draft mode, for speed) and PNGs at full size, so the model sees slightly
  different inputs; with `--decode full` the distance is 0. `exact` therefore catches most, not
  all, same-pixel files in another format.
- **A quarter-size copy of a small photo is the hardest positive**: scikit-image's 512 px
  photos become 128 px, which the model sees upscaled and blurred (median distance 7.5).
  The 10% corner crop comes next.

## Hard negatives by source

{hard_table}

The two pairs of consecutive video frames (`rubberwhale`, `basketball`: a fraction of a second
apart) and the stereo motorcycle are closer than many edited copies, and their perceptual hashes
differ in 0, 2 and 4 bits: no cheap test tells them from copies (a person clearing duplicates
would usually keep just one of them anyway). With the `aloe` stereo pair they are the hard
negatives the hashed `strict` admits in this run. `loose` also admits some of the chessboard's
burst shots (the hash sees the same grid), more stereo pairs, and synthesised pans.

## Verification: does a second test pay?

Two cheap tests computed from the files of a candidate pair: the 64-bit DCT perceptual hash
({phash_ms} ms a file here) and the correlation of 16x16 grey thumbnails ({thumb_ms} ms a file).
For each level and test, the rule with the highest recall at the level's precision (fitted on all
pairs), and held out: the same search fitted on one half of the scenes and scored on the other,
both ways round, pooled.

{verify_table}

It pays: at equal precision the hash lifts recall from {strict_vectors_recall} to
{strict_recall} (`strict`) and from {loose_vectors_recall} to {loose_recall} (`loose`), and the
held-out recall stays as high. The held-out precision of the hashed `strict` rule is lower than
fitted (each half has about 50 hard negatives, so each one admitted is worth 2 points), so read
`strict` as "precision 0.99 on these photos, about 0.96 on unseen ones" - still with a third
more recall than the vectors alone. (The vectors-alone rows here search a 0.25 grid, so their
distances differ slightly from the halfway thresholds above.)

The thumbnail correlation does about as well as the hash; the hash is kept because
it is one 64-bit integer per photo, storable in the images table and comparable without the
files. When the files cannot be read (vectors ingested without their images), the
vectors-alone distances of the first table apply.

## What the command does with the levels

`simsearch duplicates` applies these rules to the candidate pairs that its batched HNSW search
finds within the level's distance (8.75 for `strict`, 10.25 for `loose`):

- **`exact` means the same file bytes** (equal sha256), whatever the vectors say; only for a
  file that cannot be read does it fall back to the calibrated "looks identical" distance
  (1.30). Files with the same bytes are duplicates at every level, and a group whose members
  all have the same bytes is labelled `exact` in any run. (With the default object ids, the
  SHA-1 of the file, `simsearch index` already stores identical files once; `exact` groups
  appear with `--id path`, or across folders indexed separately.)
- **`strict` and `loose`**: distance and perceptual hash as in the table above when both files
  were read; the vectors-alone distance when either was not.
- **Never**: a pair of hard links (one file, two names), a pair a person marked with
  `--not-duplicate`, a file that `--move-to` moved away.

**Measured on the test photos** (`tests/test_duplicates.py`): 17 of scikit-image's photos, 40
edited copies of 8 of them (JPEG quality 40, half size, a 5% crop, brightness +25%, the same
pixels as PNG), and the stereo motorcycle's right view beside its left view (a hard negative):
59 files, 120 true pairs. Pair precision and recall of the groups the command reports:

| level | pairs reported | precision | recall |
|---|---:|---:|---:|
| `exact` | 0 | 1.000 | 0.000 |
| `strict` | 113 | 0.991 | 0.933 |
| `loose` | 113 | 0.991 | 0.933 |

`exact` reports nothing because no two files of this set have the same bytes (it is tested on
identical files and hard links separately). `strict` and `loose` admit one wrong pair, the
stereo motorcycle's two views (4 hash bits apart: a known hard negative, above), and miss 8
pairs, all among the clock's copies (a small grey photo whose half-size and quality-40 copies
move far from it and from each other).

The test asserts precision >= 0.95 and recall >= 0.85 at the default level (`strict`).

## Other models: `--max-distance`

The distances above belong to the shipped model and its preprocessing; another model's
vectors have another scale. Either run this calibration with it:

```console
$ python -m bench.calibrate_duplicates --model my-model.onnx
```

which embeds the same photos with `my-model.onnx` and prints the tables above (the vectors-alone
rows are the ones to read, unless the hash is used too), or measure a few pairs of your own:
make edited copies of a few photos (re-save, shrink, crop slightly), add a few pairs of
different shots of one scene, index them, and look at the distances with
`simsearch query COPY.jpg -n 5`. Then pass the distance that separates them,
`simsearch duplicates --max-distance D` (complete linkage still applies: every two members of a
group are within D).

## Reproducing

```console
$ python -m bench.calibrate_duplicates            # rewrites this page
$ python -m bench.calibrate_duplicates --no-doc   # prints the figures only
```

One to two minutes on 2 cores the first time (fetching two Debian packages, about 140 MB,
making {files} files, `simsearch embed` at about 30 images/s), seconds after that: photos,
copies and vectors are cached in
`~/.cache/simsearch-calibration` (`--cache DIR` to choose).
"""


if __name__ == "__main__":
    raise SystemExit(main())
