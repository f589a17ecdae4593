"""Files written and read safely: atomic replacement, content hashes. Standard library only."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_writer(path: Path, durable: bool = True) -> Iterator[IO[bytes]]:
    """A binary handle whose contents replace ``path`` in one step when the block ends.

    Written to a uniquely named temporary file beside ``path`` (two writers never share one)
    and renamed into place, so readers see the old file or the new one, never half of one; a
    failed write leaves no temporary file. ``durable`` syncs the data first, so a crash after
    the rename cannot leave an empty file under the final name.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def write_atomic(path: Path, data: bytes | Callable[[IO[bytes]], object]) -> None:
    """Replace ``path`` with ``data`` (bytes, or a function writing to a binary handle)."""
    with atomic_writer(path) as handle:
        if isinstance(data, bytes):
            handle.write(data)
        else:
            data(handle)


def resolve(stored: str, roots: list[Path]) -> Path | None:
    """A stored path as a file: absolute as it is, relative under the first root that has it."""
    candidate = Path(stored)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for root in roots:
        # resolve() follows '..' and links; the file must still be inside the root.
        base = root.resolve()
        found = (base / candidate).resolve()
        if found.is_relative_to(base) and found.is_file():
            return found
    return None
