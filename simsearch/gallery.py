"""A folder of image files: which files are images, in what order, and what each one's id is.

The order is the sorted relative path, so that two runs over the same folder cut it into the same
shards. Object ids are the origin's: the SHA-1 of the file's bytes plus its lower-case extension
(``5577b063…a360.jpg``), or the relative path when the user prefers it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

# What Pillow decodes that cameras, phones and the web produce. Other files are not looked at.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
ID_MODES = ("sha1", "path")


@dataclass
class ImageRecord:
    """One image as the images table holds it; None (and an empty meta) leaves a stored value
    as it is when the record is upserted."""

    object_id: str
    path: str | None = None  # relative to its image folder, with forward slashes, or absolute
    bytes: int | None = None
    width: int | None = None  # as displayed, after EXIF orientation
    height: int | None = None
    added_at: str | None = None  # ISO 8601
    meta: dict[str, Any] = field(default_factory=dict)


def list_images(folder: Path) -> list[str]:
    """Relative paths of the image files under ``folder``, sorted; hidden entries are skipped."""
    if not folder.exists():
        raise InputError(f"{folder}: no such image folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: expected a folder of images, found a file")
    found: list[str] = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        base = Path(directory).relative_to(folder)
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            found.append((base / name).as_posix())
    return sorted(found)


def object_id(relative_path: str, data: bytes, mode: str = "sha1") -> str:
    """The id an image is stored under: SHA-1 + lower-case extension, or its relative path."""
    if mode == "path":
        return relative_path
    if mode != "sha1":
        raise InputError(f"id mode must be one of {', '.join(ID_MODES)}, not {mode!r}")
    return hashlib.sha1(data).hexdigest() + Path(relative_path).suffix.lower()
