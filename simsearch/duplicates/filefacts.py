"""What an image file tells the duplicate finder besides its vector, read once per file:
the content sha256 (the exact level), the perceptual hash (the check on candidate pairs), the
EXIF tag count and the date taken (the keeper rule), and device and inode (hard links).

The file is read into memory once: the sha256 and the decoder share the bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..db.duplicates import FileFacts
from .phash import perceptual_hash

_EXIF_IFD = 0x8769  # the Exif sub-IFD, where DateTimeOriginal lives
_DATE_TIME_ORIGINAL = 36867
_DATE_TIME = 306
MAX_PIXELS = 100_000_000  # as `simsearch index`: a small file can declare a huge canvas


def unchanged(stored_path: str | None, stored_bytes: int | None, stored_mtime: int | None,
              path: str, stat: os.stat_result) -> bool:  # fmt: skip
    """Whether the facts stored for a file still describe it (same path, size and mtime)."""
    return stored_path == path and stored_bytes == stat.st_size and stored_mtime == stat.st_mtime_ns


def missing(object_id: str, path: str, why: str) -> FileFacts:
    """Facts for a file that cannot be read: its image is grouped by its vector alone."""
    return FileFacts(object_id, path, None, None, None, None, 0, None, None, None, why)


def read_facts(object_id: str, path: str, file: Path) -> FileFacts:
    """Read ``file`` (the image ``object_id``, recorded as ``path``) once and describe it."""
    try:
        stat = file.stat()
        data = file.read_bytes()
    except OSError as exc:
        return missing(object_id, path, f"cannot read: {exc.strerror or exc}")
    sha256 = hashlib.sha256(data).hexdigest()
    mtime = datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ValueError("too many pixels")
            tags, taken = _exif(image)
            phash: int | None = perceptual_hash(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError):  # fmt: skip
        # The bytes still count for the exact level; the picture cannot be compared.
        return FileFacts(object_id, path, stat.st_size, stat.st_mtime_ns, sha256, None, 0, mtime,
                         stat.st_dev, stat.st_ino, "not an image Pillow can read")  # fmt: skip
    return FileFacts(
        object_id,
        path,
        stat.st_size,
        stat.st_mtime_ns,
        sha256,
        phash,
        tags,
        taken or mtime,
        stat.st_dev,
        stat.st_ino,
        None,
    )


def _exif(image: Image.Image) -> tuple[int, datetime | None]:
    """How many EXIF tags the file carries (main and Exif IFDs), and its DateTimeOriginal."""
    exif = image.getexif()
    sub = exif.get_ifd(_EXIF_IFD) if _EXIF_IFD in exif else {}
    tags = len(exif) + len(sub) - (1 if _EXIF_IFD in exif else 0)
    return tags, _date(sub.get(_DATE_TIME_ORIGINAL) or exif.get(_DATE_TIME))


def _date(value: object) -> datetime | None:
    """An EXIF date ("2024:06:01 12:30:00", no time zone: read as UTC), or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip("\x00 "), "%Y:%m:%d %H:%M:%S").replace(
            tzinfo=timezone.utc
        )
    except ValueError:
        return None
