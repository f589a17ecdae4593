"""``simsearch demo``: the whole job on real photos, offline, in seconds.

It writes scikit-image's bundled sample photos (shipped inside its wheel; nothing is downloaded)
as JPEG files named by SHA-1, indexes them with the default model into the feature set "demo",
makes an edited copy of one photo that is not in the gallery, and searches with it. Re-running
reuses the files and the index.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image, ImageEnhance

from . import config
from .db import connect, images
from .errors import InputError
from .files import write_atomic
from .indexing import IndexReport, index
from .progress import Progress
from .results import Match
from .search import query

FEATURE_SET = "demo"
QUERY_PHOTO = "chelsea"
# scikit-image's photos that load without the network; greyscale ones become RGB.
COLOUR_PHOTOS = (
    "astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
    "retina", "rocket", "stereo_motorcycle",
)  # fmt: skip
GREY_PHOTOS = (
    "brick", "camera", "cell", "clock", "coins", "grass", "gravel", "moon", "page", "text",
)  # fmt: skip


NEXT_STEPS = (
    (f"simsearch query PHOTO.jpg --feature-set {FEATURE_SET}", "search the demo with any photo"),
    ("simsearch index ~/Pictures --feature-set photos", "index a folder of your own"),
    ("simsearch query PHOTO.jpg --feature-set photos -n 20", "... and search it"),
    ("simsearch embed ~/Pictures features/", "shards in the origin's format, no database"),
    ("simsearch db status", "what the database holds"),
    ('psql "$(simsearch db url)"', "SQL: JOIN embeddings with images"),
)


@dataclass
class DemoResult:
    gallery: Path
    query_image: Path
    original: Path
    matches: list[Match]
    paths: dict[str, str]  # object id -> path relative to the gallery
    names: dict[str, str]  # object id -> the sample photo's name
    report: IndexReport

    @property
    def original_first(self) -> bool:
        return bool(self.matches) and self.matches[0].object_id == self.original.name


def sample_photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled sample photos as RGB uint8 arrays, by name."""
    try:
        from skimage import data
    except ImportError:
        raise InputError(
            "the demo needs scikit-image (for its sample photos); "
            "install it: pip install 'simsearch[demo]'"
        ) from None
    photos: dict[str, np.ndarray] = {}
    for name in (*COLOUR_PHOTOS, *GREY_PHOTOS):
        loaded = getattr(data, name)()
        array = loaded[0] if isinstance(loaded, tuple) else loaded  # stereo: the left view
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        photos[name] = np.ascontiguousarray(array[..., :3], dtype=np.uint8)
    return photos


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def edited_copy(photo: np.ndarray) -> Image.Image:
    """A copy a person might make: warmer colours, cropped to 85%, smaller, re-compressed."""
    image = Image.fromarray(photo)
    shifted = np.asarray(ImageEnhance.Color(image).enhance(1.4), dtype=np.float32)
    shifted = shifted * np.array([1.10, 1.0, 0.85], np.float32) + np.array([12, 4, 0], np.float32)
    image = Image.fromarray(shifted.clip(0, 255).astype(np.uint8))
    width, height = image.size
    dx, dy = int(width * 0.075), int(height * 0.075)
    image = image.crop((dx, dy, width - dx, height - dy))
    image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)
    return Image.open(io.BytesIO(jpeg_bytes(image, quality=60)))


def write_gallery(folder: Path, photos: dict[str, np.ndarray]) -> dict[str, Path]:
    """Each photo as ``<sha1>.jpg`` in ``folder`` (as the origin named files); name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, photo in photos.items():
        data = jpeg_bytes(Image.fromarray(photo))
        path = folder / f"{hashlib.sha1(data).hexdigest()}.jpg"
        if not path.exists():
            write_atomic(path, data)
        written[name] = path
    return written


def run_demo(
    workdir: Path | None = None, n: int = 5, say: Callable[[str], None] = print
) -> DemoResult:
    workdir = (workdir or config.home() / "demo").expanduser().resolve()
    gallery_dir = workdir / "gallery"
    say(f"Writing scikit-image's sample photos as JPEG files to {gallery_dir} ...")
    photos = sample_photos()
    written = write_gallery(gallery_dir, photos)
    query_dir = workdir / "query"
    query_dir.mkdir(parents=True, exist_ok=True)
    query_image = query_dir / f"{QUERY_PHOTO}-edited.jpg"
    edited_copy(photos[QUERY_PHOTO]).save(query_image, "JPEG", quality=95)

    say(
        f"Indexing {len(written)} photos with the default model (EfficientNet-Lite0) into "
        f"feature set {FEATURE_SET!r} on {connect.describe()} ..."
    )
    report = index(gallery_dir, feature_set=FEATURE_SET, progress=Progress())
    say("  " + report.summary())

    say(
        f"Searching with {query_image}\n  (a copy of the {QUERY_PHOTO} photo: colours shifted, "
        "cropped to 85%, scaled to 3/4, re-saved as JPEG quality 60; it is not in the gallery)"
    )
    (matches,) = query([query_image], n=n, feature_set=FEATURE_SET)
    with connect.connect() as conn:
        records = images.image_records(conn, [m.object_id for m in matches])
    paths = {oid: r.path for oid, r in records.items() if r.path is not None}
    names = {path.name: name for name, path in written.items()}
    return DemoResult(gallery_dir, query_image, written[QUERY_PHOTO], matches, paths, names, report)


def print_result(result: DemoResult, out: TextIO) -> None:
    out.write(f"\nTop {len(result.matches)} (Euclidean distance, nearest first):\n")
    for rank, match in enumerate(result.matches, 1):
        relative = result.paths.get(match.object_id, match.object_id)
        label = result.names.get(match.object_id, "?")
        marker = "  <- the original" if match.object_id == result.original.name else ""
        out.write(
            f"  {rank}. {match.distance:7.3f}  {result.gallery / relative}  ({label}){marker}\n"
        )
    if result.original_first:
        out.write(f"\nThe original photo ({result.original.name}) came first.\n")
    else:
        out.write(f"\nThe original photo ({result.original.name}) did NOT come first.\n")
    out.write(f"\nTry next{_command_note()}:\n")
    for command, why in NEXT_STEPS:
        out.write(f"  {command:<58} # {why}\n")


def _command_note() -> str:
    """Where `simsearch` is, when the demo ran from a virtualenv that is not on PATH."""
    exe = Path(sys.argv[0])
    if exe.name != "simsearch" or shutil.which("simsearch") == str(exe):
        return ""
    return f" (simsearch is {exe}; `. {exe.parent}/activate` puts it on PATH)"
