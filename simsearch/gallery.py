"""A folder of image files: which files are images, in what order, and what each one's id is.

The order is the sorted relative path, so that two runs over the same folder cut it into the same
shards. Object ids are the origin's: the SHA-1 of the file's bytes plus its lower-case extension
(``5577b063…a360.jpg``), or the relative path when the user prefers it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

# What Pillow decodes that cameras, phones and the web produce. Other files are not looked at.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
ID_MODES = ("sha1", "path")


@dataclass(frozen=True)
class ImageRecord:
    """One image file as the images table holds it."""

    object_id: str
    path: str  # relative to the folder, with forward slashes
    bytes: int
    width: int  # as displayed, after EXIF orientation
    height: int


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
