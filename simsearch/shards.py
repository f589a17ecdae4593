"""Feature shards on disk: finding them, reading them, checking them. Pure: files in, arrays out.

A feature directory holds pairs ``NNNN.object_ids.npy`` (1-D strings) and ``NNNN.features.npy``
(2-D floats, one row per id). Every pair present is a shard, whatever its number.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ShardError
from .files import sha256_file

IDS_SUFFIX = ".object_ids.npy"
FEATURES_SUFFIX = ".features.npy"
MAX_OBJECT_ID_BYTES = 1024
_SHARD_FILE = re.compile(r"^(\d+)(\.object_ids\.npy|\.features\.npy)$")


@dataclass(frozen=True)
class ShardFiles:
    """The two files of one shard."""

    name: str  # the shard's number as written in its file names, e.g. "0003"
    ids_path: Path
    features_path: Path


@dataclass(frozen=True)
class ShardListing:
    """What a feature directory holds, including what cannot be loaded."""

    shards: list[ShardFiles]
    unpaired: list[Path] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """One line for each file or number that will not be loaded."""
        lines = [f"{path.name}: no matching {_partner_suffix(path)} file" for path in self.unpaired]
        if self.gaps:
            lines.append("missing shard numbers: " + _ranges(self.gaps))
        return lines


@dataclass(frozen=True)
class Shard:
    """One shard's validated contents."""

    name: str
    object_ids: list[str]
    features: np.ndarray  # float32, C-contiguous, shape (rows, dimension)
    sha256: str

    @property
    def rows(self) -> int:
        return len(self.object_ids)

    @property
    def dimension(self) -> int:
        return int(self.features.shape[1])


def list_shards(feature_dir: Path) -> ShardListing:
    """Every shard pair in ``feature_dir``, in numeric order, with unpaired files and gaps."""
    if not feature_dir.exists():
        raise ShardError(f"{feature_dir}: no such feature directory")
    if not feature_dir.is_dir():
        raise ShardError(f"{feature_dir}: expected a directory of .npy shards, found a file")
    ids: dict[str, Path] = {}
    features: dict[str, Path] = {}
    for path in feature_dir.iterdir():
        match = _SHARD_FILE.match(path.name)
        if match is None or not path.is_file():
            continue
        (ids if match.group(2) == IDS_SUFFIX else features)[match.group(1)] = path
    if not ids and not features:
        raise ShardError(
            f"{feature_dir}: no shards found (expected NNNN{IDS_SUFFIX} + NNNN{FEATURES_SUFFIX})"
        )
    names = sorted(ids.keys() & features.keys(), key=_shard_sort_key)
    unpaired = sorted(
        [ids[n] for n in ids.keys() - features.keys()]
        + [features[n] for n in features.keys() - ids.keys()]
    )
    return ShardListing(
        shards=[ShardFiles(n, ids[n], features[n]) for n in names],
        unpaired=unpaired,
        gaps=_gaps(ids.keys() | features.keys()),
    )


def shard_sha256(files: ShardFiles) -> str:
    """One checksum over both files: what the ledger compares to tell a changed shard."""
    digest = hashlib.sha256()
    for path in (files.ids_path, files.features_path):
        try:
            digest.update(sha256_file(path).encode())
        except OSError as exc:
            raise ShardError(f"{path}: cannot be read ({exc.strerror})") from None
    return digest.hexdigest()


def read_shard(files: ShardFiles, dimension: int | None = None) -> Shard:
    """Load and validate one shard; raise ShardError naming the file and the problem."""
    sha256 = shard_sha256(files)
    ids = _load_npy(files.ids_path)
    feats = _load_npy(files.features_path)
    object_ids = _check_ids(files.ids_path, ids)
    features = _check_features(files.features_path, feats, dimension)
    if len(object_ids) != features.shape[0]:
        raise ShardError(
            f"{files.name}: {files.ids_path.name} has {len(object_ids)} ids but "
            f"{files.features_path.name} has {features.shape[0]} rows; expected equal row counts"
        )
    return Shard(files.name, object_ids, features, sha256)


def iter_shards(listing: ShardListing, dimension: int | None = None) -> Iterator[Shard]:
    """Read the shards one at a time, so that only one is in memory."""
    for files in listing.shards:
        yield read_shard(files, dimension)


def _load_npy(path: Path) -> np.ndarray:
    try:
        with path.open("rb") as handle:
            magic = handle.read(6)
    except OSError as exc:
        raise ShardError(f"{path}: cannot be read ({exc.strerror})") from None
    if magic != b"\x93NUMPY":
        # np.load would take anything else for a pickle; say what the file really is not.
        raise ShardError(f"{path}: not a readable .npy file (no NumPy header)")
    try:
        # Never unpickle: an object array in a .npy file can run arbitrary code when loaded.
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Python objects" in str(exc):
            raise ShardError(
                f"{path}: holds a pickled object array; expected a plain NumPy array "
                "(strings for ids, floats for features)"
            ) from None
        raise ShardError(f"{path}: not a readable .npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise ShardError(f"{path}: not a readable .npy file ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise ShardError(f"{path}: expected a single .npy array, found an .npz archive")
    return array


def _check_ids(path: Path, array: np.ndarray) -> list[str]:
    if array.ndim != 1:
        raise ShardError(f"{path}: expected a 1-D array of object ids, found shape {array.shape}")
    if array.dtype.kind == "U":
        object_ids = [str(value) for value in array.tolist()]
    elif array.dtype.kind == "S":
        try:
            object_ids = [value.decode("utf-8") for value in array.tolist()]
        except UnicodeDecodeError:
            raise ShardError(f"{path}: object ids are bytes that are not UTF-8") from None
    else:
        raise ShardError(f"{path}: expected string object ids, found dtype {array.dtype}")
    if not object_ids:
        raise ShardError(f"{path}: has zero rows; expected at least one object id")
    seen: set[str] = set()
    for row, object_id in enumerate(object_ids):
        _check_object_id(path, row, object_id)
        if object_id in seen:
            raise ShardError(f"{path}: object id {object_id!r} appears twice (row {row})")
        seen.add(object_id)
    return object_ids


def _check_object_id(path: Path, row: int, object_id: str) -> None:
    if not object_id:
        raise ShardError(f"{path}: row {row} has an empty object id")
    if "\x00" in object_id:
        raise ShardError(f"{path}: row {row} has an object id containing a NUL character")
    if len(object_id.encode("utf-8")) > MAX_OBJECT_ID_BYTES:
        raise ShardError(
            f"{path}: row {row} has an object id longer than {MAX_OBJECT_ID_BYTES} bytes"
        )


def _check_features(path: Path, array: np.ndarray, dimension: int | None) -> np.ndarray:
    if array.ndim != 2:
        raise ShardError(
            f"{path}: expected a 2-D array [rows, dimension] of features, found shape {array.shape}"
        )
    if array.dtype.kind != "f":
        raise ShardError(f"{path}: expected float features, found dtype {array.dtype}")
    if array.shape[0] == 0:
        raise ShardError(f"{path}: has zero rows; expected at least one feature vector")
    if dimension is not None and array.shape[1] != dimension:
        raise ShardError(
            f"{path}: features have dimension {array.shape[1]}; the feature set expects {dimension}"
        )
    features = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ShardError(f"{path}: row {row} has NaN or Inf (or a value too large for float32)")
    return features


def _shard_sort_key(name: str) -> tuple[int, str]:
    return (int(name), name)


def _gaps(names: set[str]) -> list[str]:
    numbers = {int(n) for n in names}
    width = max(len(n) for n in names)
    return [f"{i:0{width}d}" for i in range(max(numbers) + 1) if i not in numbers]


def _ranges(names: list[str]) -> str:
    """'0003, 0005-0007' from ['0003', '0005', '0006', '0007']."""
    parts: list[str] = []
    start = prev = names[0]
    for name in [*names[1:], None]:
        if name is not None and int(name) == int(prev) + 1:
            prev = name
            continue
        parts.append(start if start == prev else f"{start}-{prev}")
        if name is not None:
            start = prev = name
    return ", ".join(parts)


def _partner_suffix(path: Path) -> str:
    return FEATURES_SUFFIX if path.name.endswith(IDS_SUFFIX) else IDS_SUFFIX
