"""Real embeddings of real photos by the shipped model, made once and cached.

Random crops of a few hundred photos (Debian's Tux Paint photo stamps and wallpapers, and
scikit-image's sample photos) are embedded with the shipped EfficientNet-Lite0: many crops of
one photo play the part of near-duplicates and re-framings in a real collection, and distinct
photos the part of everything else. Some photos are held out, so queries include photos the
set has never seen (the hard case) as well as new crops of stored ones (half re-saved as JPEG).

The ONNX model is run here directly with onnxruntime and its JSON sidecar, following
simsearch/preprocess.py (resize to 224x224 bicubic, /255, NHWC): crops are made in memory, so
no image files are written, and this module does not depend on the package's internal names
(which are being renamed).

``python -m bench.photos`` builds the cache (a few minutes, run under ``nice``) and says where.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
MODEL = ROOT / "simsearch" / "models" / "efficientnet_lite0.onnx"
SEED = 20_261_201
# Debian packages that ship real photos (not drawings): Tux Paint's photo stamps are objects
# cut out of photos; ukui-wallpapers are landscape and city photos.
DEBIAN_PACKAGES = ("tuxpaint-stamps-default", "ukui-wallpapers")
# scikit-image's bundled samples that are photographs (the others are drawings or microscopy).
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "camera",
    "brick",
    "grass",
    "gravel",
    "coins",
    "moon",
)
MIN_SIDE = 96  # smaller pictures are icons, and 5 % crops of them are a handful of pixels
MAX_SIDE = 768  # decode large wallpapers once at this size: crops need no more pixels
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
# A crop this flat (pixel standard deviation, 0-255) shows nothing: a small crop of a stamp's
# white background or of a clear sky. All such crops embed to one and the same vector, which
# a real collection would hold once; they are drawn again.
MIN_CROP_STD = 6.0
CACHE_VERSION = 2  # bump when the crops change for the same spec and photos


@dataclass(frozen=True)
class CropSpec:
    photos: int = 400  # distinct photos in all, held-out ones included
    crops: int = 36  # stored crops per stored photo
    held_out: float = 0.1  # share of photos never stored: their crops are "new photo" queries
    seen_queries: int = 400  # new crops of stored photos (half re-saved as JPEG q75)
    new_queries_per_photo: int = 3
    seed: int = SEED

    def key(self, sources: Sequence[str], model_sha: str) -> str:
        text = json.dumps([self.__dict__, list(sources), model_sha, CACHE_VERSION], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RealCrops:
    """Embeddings of crops: stored rows with the photo each came from, and held-out queries."""

    stored: np.ndarray  # float32 [rows, dim]
    stored_photo: np.ndarray  # int32 [rows]: index into the photo list
    queries: np.ndarray  # float32 [queries, dim]
    query_photo: np.ndarray  # int32 [queries]
    query_new: np.ndarray  # bool [queries]: True = a photo with no crop stored

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, **self.__dict__)
        partial.replace(path)  # a cache file is whole or absent

    @classmethod
    def load(cls, path: Path) -> RealCrops:
        with np.load(path) as data:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def install_photo_packages() -> None:
    """Install the Debian photo packages when missing and we are root (apt works here)."""
    missing = [p for p in DEBIAN_PACKAGES if not _dpkg_installed(p)]
    if not missing or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "env": env, "check": False}
    subprocess.run(["apt-get", "update", "-qq"], **quiet)  # type: ignore[call-overload]
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    subprocess.run(command, **quiet)  # type: ignore[call-overload]


def _dpkg_installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return "install ok installed" in done.stdout


def photo_sources(packages: Sequence[str] = DEBIAN_PACKAGES, skimage: bool = True) -> list[str]:
    """Every candidate photo, sorted: the packages' image files, then ``skimage:NAME``.

    Files are taken from the packages' own file lists, not by scanning shared folders, which
    also hold other packages' drawings and abstract (even blank) wallpapers."""
    found = sorted(
        path
        for package in packages
        for path in _package_files(package)
        if Path(path).suffix.lower() in SUFFIXES and Path(path).is_file() and _photo_like(path)
    )
    if skimage:
        found += [f"skimage:{name}" for name in SKIMAGE_PHOTOS]
    return found


def _photo_like(path: str) -> bool:
    # Tux Paint keeps its drawn stamps in cartoon/ folders, and ships mirrored copies of
    # some photos as *_mirror files (crops are mirrored at random anyway).
    return "/cartoon/" not in path and not Path(path).stem.endswith("_mirror")


def _package_files(package: str) -> list[str]:
    if shutil.which("dpkg-query") is None:
        return []
    done = subprocess.run(
        ["dpkg-query", "-L", package], capture_output=True, text=True, check=False
    )
    return done.stdout.splitlines() if done.returncode == 0 else []


def open_photo(source: str) -> Image.Image | None:
    """The photo as RGB at most MAX_SIDE a side; None when unreadable or too small."""
    try:
        if source.startswith("skimage:"):
            from skimage import data

            pixels = getattr(data, source.split(":", 1)[1])()
            if isinstance(pixels, tuple):  # stereo_motorcycle: (left, right, disparity)
                pixels = pixels[0]
            image = Image.fromarray(pixels)
        else:
            image = ImageOps.exif_transpose(Image.open(source))
    except Exception:  # any unreadable or unknown file is just not a candidate
        return None
    if min(image.size) < MIN_SIDE:
        return None
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
    if image.mode in ("RGBA", "LA", "P"):
        # Stamps are cut-outs: put them on white, as a page or a product photo would be.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB")
    # A blank picture (a fully transparent PNG) is no photo.
    return image if float(np.asarray(image, np.float32).std()) >= MIN_CROP_STD else None


def random_crop(image: Image.Image, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """A crop of 5-100 % of the area, aspect 3:4-4:3, maybe mirrored, mildly re-coloured;
    drawn again (a few times at most) while it is flat."""
    for _ in range(10):
        crop = _one_crop(image, rng, size)
        if float(np.asarray(crop, np.float32).std()) >= MIN_CROP_STD:
            break
    return crop


def _one_crop(image: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    width, height = image.size
    area = rng.uniform(0.05, 1.0) * width * height
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w = int(min(width, max(8, round(np.sqrt(area * aspect)))))
    h = int(min(height, max(8, round(np.sqrt(area / aspect)))))
    left = int(rng.integers(0, width - w + 1))
    top = int(rng.integers(0, height - h + 1))
    crop = image.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        crop = ImageOps.mirror(crop)
    crop = crop.resize((size, size), Image.Resampling.BICUBIC)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        crop = enhance(crop).enhance(float(rng.uniform(0.9, 1.1)))
    return crop


def jpeg_again(image: Image.Image, quality: int = 75) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


class Embedder:
    """The ONNX model with its sidecar's preprocessing, batched."""

    def __init__(self, model: Path = MODEL, threads: int = 2) -> None:
        import onnxruntime as ort

        meta = json.loads(model.with_suffix(".json").read_text())
        self.prep = meta["preprocess"]
        self.input = meta["input_name"]
        self.output = meta["output_name"]
        self.sha = meta.get("sha256", "")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(model), options, providers=providers)

    def __call__(self, crops: Sequence[Image.Image]) -> np.ndarray:
        prep = self.prep
        size = (prep["width"], prep["height"])
        pixels = np.stack(
            [np.asarray(c.resize(size, Image.Resampling.BICUBIC), np.float32) for c in crops]
        )
        pixels = (pixels * prep["scale"] - np.float32(prep["mean"])) / np.float32(prep["std"])
        if prep["layout"] == "NCHW":
            pixels = pixels.transpose(0, 3, 1, 2)
        feed = {self.input: np.ascontiguousarray(pixels, np.float32)}
        return np.asarray(self.session.run([self.output], feed)[0], np.float32)


def make(spec: CropSpec, sources: Sequence[str], embedder: Embedder, batch: int = 32) -> RealCrops:
    """Embed the spec's crops of the first readable photos of a seeded shuffle of ``sources``."""
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(sources))
    photos = _readable(sources, order, spec.photos)
    n_new = max(1, round(len(photos) * spec.held_out)) if len(photos) > 1 else 0
    new = set(range(len(photos) - n_new, len(photos)))
    stored_count = len(photos) - n_new
    seen_per_photo = np.bincount(
        rng.integers(0, stored_count, spec.seen_queries), minlength=stored_count
    )
    rows: list[np.ndarray] = []
    labels: list[tuple[int, bool, bool]] = []  # photo, is a query, is a new photo
    pending: list[Image.Image] = []
    started, done = time.perf_counter(), 0
    for index, image in enumerate(photos):
        for crop, is_query in _crops_of(image, index, index in new, spec, seen_per_photo, rng):
            pending.append(crop)
            labels.append((index, is_query, index in new))
            if len(pending) == batch:
                rows.append(embedder(pending))
                done += len(pending)
                pending = []
        _progress(done, started, index + 1, len(photos))
    if pending:
        rows.append(embedder(pending))
    vectors = np.concatenate(rows)
    photo = np.array([p for p, _, _ in labels], np.int32)
    query = np.array([q for _, q, _ in labels], bool)
    is_new = np.array([n for _, _, n in labels], bool)
    return RealCrops(vectors[~query], photo[~query], vectors[query], photo[query], is_new[query])


def _readable(sources: Sequence[str], order: np.ndarray, count: int) -> list[Image.Image]:
    photos: list[Image.Image] = []
    for i in order:
        image = open_photo(sources[int(i)])
        if image is not None:
            photos.append(image)
        if len(photos) == count:
            break
    return photos


def _crops_of(
    image: Image.Image,
    index: int,
    new: bool,
    spec: CropSpec,
    seen_per_photo: np.ndarray,
    rng: np.random.Generator,
) -> Iterator[tuple[Image.Image, bool]]:
    if new:
        for _ in range(spec.new_queries_per_photo):
            yield random_crop(image, rng), True
        return
    for _ in range(spec.crops):
        yield random_crop(image, rng), False
    for _ in range(int(seen_per_photo[index])):
        crop = random_crop(image, rng)
        # Half the queries are re-saved copies, as a user's query photo often is.
        yield (jpeg_again(crop) if rng.random() < 0.5 else crop), True


def _progress(done: int, started: float, photo: int, photos: int) -> None:
    if photo % 20 == 0 or photo == photos:
        rate = done / max(time.perf_counter() - started, 1e-9)
        print(f"  embedded {done:,} crops of {photo}/{photos} photos ({rate:.0f}/s)", flush=True)


def ensure(spec: CropSpec | None = None, data: Path = DATA) -> tuple[RealCrops, Path]:
    """The cached real crops for ``spec`` (default: the benchmark's), made on first use."""
    spec = spec or CropSpec()
    install_photo_packages()
    sources = photo_sources()
    model_sha = json.loads(MODEL.with_suffix(".json").read_text()).get("sha256", "")
    path = data / f"real-crops-{spec.key(sources, model_sha)}.npz"
    if path.exists():
        return RealCrops.load(path), path
    print(f"embedding real crops into {path} (once; {len(sources)} candidate photos)", flush=True)
    crops = make(spec, sources, Embedder())
    crops.save(path)
    return crops, path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.photos", description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA, help="cache directory")
    args = parser.parse_args(argv)
    crops, path = ensure(data=args.data)
    photos = len(np.unique(crops.stored_photo))
    print(
        f"{path}: {len(crops.stored):,} stored crops of {photos} photos, "
        f"{len(crops.queries)} queries ({int(crops.query_new.sum())} of held-out photos)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
