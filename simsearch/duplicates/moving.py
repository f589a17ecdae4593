"""Acting on a report, safely: ``--move-to DIR`` and ``--undo MANIFEST``.

Every copy but the keeper is moved into DIR, under its path relative to its image folder, and a
manifest (JSON: original path, new path, sha256 of each file) is written into DIR *before*
anything moves, so that an interrupted move can still be undone. Only files under the folders
the database records (``simsearch index``'s folders) are touched; a member whose file resolves
anywhere else is skipped with a warning. ``--undo`` moves each file back when it is still in
DIR with the same sha256 and nothing has taken its old place.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..db import connect, duplicates, images
from ..errors import InputError
from ..files import resolve, sha256_file, write_atomic
from .finder import Report

MANIFEST_VERSION = 1


@dataclass
class MoveReport:
    manifest: Path | None = None
    moved: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # one line each: which file and why

    def summary(self, undo: bool = False) -> str:
        if undo:
            return f"moved {self.moved:,} file(s) back; {len(self.skipped):,} skipped"
        where = f"; manifest {self.manifest}" if self.manifest else ""
        return (
            f"moved {self.moved:,} file(s) ({self.bytes:,} bytes); "
            f"{len(self.skipped):,} skipped{where}"
        )


def move_copies(report: Report, destination: Path) -> MoveReport:
    """Move every non-keeper of ``report``'s groups into ``destination``, with a manifest."""
    destination = destination.expanduser().resolve()
    result = MoveReport()
    with connect.connect() as conn:
        roots = [Path(r).resolve() for r in images.image_roots(conn)]
        for root in roots:
            if destination.is_relative_to(root):
                raise InputError(
                    f"--move-to {destination} is inside the image folder {root}; expected a "
                    "folder outside the indexed folders (a later index would find the copies)"
                )
        plan = _plan(report, roots, destination, result)
        if not plan:
            return result
        destination.mkdir(parents=True, exist_ok=True)
        manifest = destination / f"simsearch-duplicates-{time.strftime('%Y%m%d-%H%M%S')}.json"
        body = {
            "version": MANIFEST_VERSION,
            "feature_set": report.feature_set,
            "level": report.level,
            "moves": plan,
        }
        write_atomic(manifest, json.dumps(body, indent=1).encode())
        result.manifest = manifest
        for entry in plan:
            source, target = Path(entry["from"]), Path(entry["to"])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(target))  # a rename within one file system
            duplicates.set_moved(conn, entry["object_id"], str(target))
            result.moved += 1
            result.bytes += target.stat().st_size
    return result


def _plan(
    report: Report, roots: list[Path], destination: Path, result: MoveReport
) -> list[dict[str, str]]:
    plan: list[dict[str, str]] = []
    taken: set[Path] = set()
    for group in report.groups:
        for member in group.members:
            if member.object_id == group.keep:
                continue
            if member.path is None:
                result.skipped.append(f"{member.object_id}: no file recorded")
                continue
            source = resolve(member.path, roots)
            root = next((r for r in roots if source and source.is_relative_to(r)), None)
            if source is None or root is None:
                result.skipped.append(f"{member.path}: not under a folder the database records")
                continue
            target = _free(destination / source.relative_to(root), taken)
            taken.add(target)
            plan.append(
                {
                    "object_id": member.object_id,
                    "from": str(source),
                    "to": str(target),
                    "sha256": sha256_file(source),
                    "keeper": group.keep,
                }
            )
    return plan


def _free(target: Path, taken: set[Path]) -> Path:
    """``target``, or ``name-2.ext``, ``name-3.ext`` ... when that name is used already."""
    candidate, n = target, 1
    while candidate in taken or candidate.exists():
        n += 1
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
    return candidate


def undo(manifest: Path) -> MoveReport:
    """Put back the files a manifest records, where that is safe."""
    try:
        body = json.loads(manifest.read_text())
        moves = body["moves"]
        if not isinstance(moves, list):
            raise TypeError
    except FileNotFoundError:
        raise InputError(f"{manifest}: no such manifest") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            f"{manifest}: expected a manifest written by simsearch duplicates --move-to"
        ) from None
    result = MoveReport(manifest=manifest)
    with connect.connect() as conn:
        for entry in moves:
            source, target = Path(entry["from"]), Path(entry["to"])
            why = _cannot_restore(source, target, entry.get("sha256"))
            if why:
                result.skipped.append(f"{source}: {why}")
                continue
            source.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(target), str(source))
            duplicates.set_moved(conn, str(entry["object_id"]), None)
            result.moved += 1
    return result


def _cannot_restore(source: Path, target: Path, sha256: object) -> str | None:
    if not target.is_file():
        return f"{target} is gone"
    if os.path.lexists(source):
        return "a file has taken its place"
    if sha256 != sha256_file(target):
        return f"{target} changed since it was moved"
    return None
