"""Thumbnails of stored images: made once per (file version, size), kept on disk, served as JPEG.

The cache key is the source file's path, modification time and size, so an image replaced on
disk gets a new thumbnail and nothing stale is served. Files are written under a temporary name
and renamed into place, so two requests making the same thumbnail at once never serve half a file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image, ImageOps

from ..errors import ImageError
from ..files import atomic_writer
from ..preprocess import MAX_IMAGE_PIXELS, to_rgb

MIN_SIZE = 16
MAX_SIZE = 1024
DEFAULT_SIZE = 256
QUALITY = 85


def thumbnail(source: Path, cache_dir: Path, size: int = DEFAULT_SIZE) -> Path:
    """A JPEG at most ``size`` pixels on its longer side, made from ``source`` on first request."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ImageError(f"expected a thumbnail size from {MIN_SIZE} to {MAX_SIZE}, found {size}")
    st = source.stat()
    # "white": thumbnails made before transparent pixels were composited onto white are stale.
    stamp = f"{source}\0{st.st_mtime_ns}\0{st.st_size}\0{size}\0white"
    key = hashlib.sha256(stamp.encode()).hexdigest()
    target = cache_dir / str(size) / key[:2] / f"{key}.jpg"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    image = _shrunk(source, size)
    with atomic_writer(target, durable=False) as handle:  # a lost thumbnail is made again
        image.save(handle, "JPEG", quality=QUALITY, optimize=True)
    return target


def _shrunk(source: Path, size: int) -> Image.Image:
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(f"{source}: image too large ({width}x{height}) for a thumbnail")
            # A JPEG can be decoded at 1/2, 1/4 or 1/8 scale directly: far faster for photos.
            image.draft("RGB", (size, size))
            oriented = ImageOps.exif_transpose(image)
            rgb = to_rgb(oriented, alpha="white")  # as a browser shows it on the white page
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{source}: cannot make a thumbnail ({exc})") from None
    rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
    return rgb
