"""``simsearch duplicates``: near-duplicate groups of a feature set, incrementally.

The steps, each resumable because its state lives in the database (``db.duplicates``):

1. **Files.** Every image with a recorded file is read once (sha256, perceptual hash, EXIF,
   date, inode); a file whose path, size and mtime are unchanged is not read again.
2. **Candidates.** Every image not yet searched at the level's radius asks the HNSW index for
   its k nearest neighbours, a batch of images per statement; an image whose k neighbours all
   fall inside the radius is asked again with four times k (up to pgvector's 1,000). The pairs
   within the radius and the batch's progress are committed together, so a run after new
   images were indexed searches only from the new ones, and an interrupted run continues.
   Every pair is found from its newer side: distance is symmetric.
3. **Groups.** The stored pairs are checked with the level's rule (distance, then the hash
   check when both files were read; same bytes always pass; decisions and hard links never),
   and grouped by complete linkage (``grouping.group_pairs``) with a size cap; the copy to
   keep is chosen by ``grouping.choose_keeper``. The groups are stored for the SQL function
   ``simsearch_duplicates``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config
from ..db import connect, duplicates, feature_sets, images, knn
from ..db.duplicates import GroupRow, Member
from ..db.feature_sets import Connection, FeatureSet
from ..errors import FeatureSetError, InputError
from ..files import resolve
from ..progress import Progress
from . import filefacts
from .grouping import DEFAULT_MAX_SIZE, LEVELS, Photo, choose_keeper, group_pairs
from .phash import hash_distance

LEVEL_NAMES = ("exact", "strict", "loose")
DEFAULT_LEVEL = "strict"
# Without an HNSW index every image's search scans the whole feature set, n^2 in all: 5,000 x
# 1280 took 26 s on 2 cores, so 10,000 takes about 100 s; beyond that an index is asked for.
EXACT_ROWS = 10_000
FIRST_K = 16  # neighbours asked for first; copies of one photo rarely number more
MAX_K = config.EF_SEARCH_MAX  # an HNSW scan yields at most ef_search (<= 1000) rows
SEARCH_BATCH = 200  # images per statement: a batch's rows are all the memory a search holds
FILE_BATCH = 500
# A near-duplicate's neighbours are very close, where the graph is dense: a small beam finds
# them. 64 keeps recall of pairs within the loose radius at 1.0 on the benchmark's copies.
DUPLICATE_EF = 64


@dataclass(frozen=True)
class Rule:
    """When a candidate pair counts as a duplicate at one level (or --max-distance D)."""

    name: str  # exact, strict, loose, or custom
    radius: float  # candidate pairs are searched within it
    max_hash: int | None = None  # the perceptual-hash check, when both files were read
    vectors_only: float | None = None  # the threshold when a file could not be read
    max_distance: float | None = None  # --max-distance

    def admits(self, distance: float, a: Member | None, b: Member | None) -> bool:
        if a is not None and b is not None:
            if a.inode is not None and (a.device, a.inode) == (b.device, b.inode):
                return False  # one file under two names (hard links): nothing to remove
            if a.sha256 is not None and a.sha256 == b.sha256:
                return True  # the same bytes
        both_read = (
            a is not None and b is not None and a.sha256 is not None and b.sha256 is not None
        )
        if self.max_distance is not None:
            return distance <= self.max_distance
        if self.name == "exact":
            # Identical bytes only; where a file could not be read, "looks identical" vectors.
            return not both_read and distance <= self.radius
        if a is None or b is None or a.phash is None or b.phash is None or self.max_hash is None:
            limit = self.vectors_only if self.vectors_only is not None else self.radius
            return distance <= limit
        return distance <= self.radius and hash_distance(a.phash, b.phash) <= self.max_hash


def rule_for(level: str | None, max_distance: float | None) -> Rule:
    """The rule of a named level, or of --max-distance D (which takes precedence)."""
    if max_distance is not None:
        if not max_distance >= 0 or math.isinf(max_distance):
            raise InputError(f"expected --max-distance to be a distance >= 0, found {max_distance}")
        return Rule("custom", radius=max_distance, max_distance=max_distance)
    name = level or DEFAULT_LEVEL
    if name not in LEVELS:
        raise InputError(f"expected level exact, strict or loose, found {name!r}")
    found = LEVELS[name]
    return Rule(name, found.max_distance, found.max_hash_distance, found.vectors_only_distance)


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupMember:
    object_id: str
    path: str | None
    distance: float  # to the keeper
    width: int | None
    height: int | None
    bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "path": self.path,
            "distance": round(self.distance, 4),
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class DuplicateGroup:
    number: int
    level: str  # exact when every member has the same bytes, else the run's level
    diameter: float
    keep: str
    reason: str
    members: tuple[GroupMember, ...]  # the keeper first, then by distance to it

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.number,
            "level": self.level,
            "diameter": round(self.diameter, 4),
            "keep": self.keep,
            "reason": self.reason,
            "members": [m.to_json() for m in self.members],
        }


@dataclass
class Report:
    feature_set: str
    level: str
    max_distance: float | None
    groups: list[DuplicateGroup] = field(default_factory=list)
    images: int = 0
    searched: int = 0  # images searched by this run (the rest were searched before)
    files_read: int = 0
    unreadable: int = 0
    capped: int = 0  # images with more neighbours within the radius than MAX_K
    pairs: int = 0  # candidate pairs within the threshold that passed the rule
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"groups": [g.to_json() for g in self.groups]}

    def summary(self) -> str:
        what = f"--max-distance {self.max_distance:g}" if self.max_distance is not None else (
            f"level {self.level}"
        )  # fmt: skip
        copies = sum(len(g.members) - 1 for g in self.groups)
        line = (
            f"{self.feature_set}: {len(self.groups):,} group(s), {copies:,} copies to remove "
            f"({what}); {self.images:,} images; this run searched {self.searched:,} and read "
            f"{self.files_read:,} files in {self.seconds:.1f} s"
        )
        if self.unreadable:
            line += f"; {self.unreadable:,} file(s) unreadable, grouped by vectors alone"
        if self.capped:
            line += f"; {self.capped:,} image(s) with over {MAX_K} neighbours within the radius"
        return line


# --- running it -----------------------------------------------------------------------------

BatchHook = Callable[[int], None]  # called with the images searched so far, after each batch


def find_duplicates(
    feature_set: str | None = None,
    level: str | None = None,
    max_distance: float | None = None,
    *,
    max_group_size: int = DEFAULT_MAX_SIZE,
    batch: int = SEARCH_BATCH,
    workers: int = 2,
    progress: Progress | None = None,
    on_batch: BatchHook | None = None,
    read_files: bool = True,
    conn: Connection | None = None,
) -> Report:
    """Find, group and store the duplicates of a feature set (see the module's docstring)."""
    if conn is None:
        with connect.connect() as own:
            return find_duplicates(
                feature_set, level, max_distance, max_group_size=max_group_size, batch=batch,
                workers=workers, progress=progress, on_batch=on_batch, read_files=read_files,
                conn=own,
            )  # fmt: skip
    progress = progress or Progress(enabled=False)
    rule = rule_for(level, max_distance)
    if max_group_size < 2:
        raise InputError(f"expected a group size cap of at least 2, found {max_group_size}")
    fs = feature_sets.resolve(conn, feature_set)
    started = time.perf_counter()
    report = Report(fs.name, rule.name, max_distance)
    to_search, report.images = duplicates.count_to_search(conn, fs, rule.radius)
    check_searchable(fs, report.images, to_search)
    if read_files:
        read_all_files(conn, fs, report, progress)
    search(conn, fs, rule.radius, to_search, report, progress, batch, workers, on_batch)
    report.groups = group(conn, fs, rule, max_group_size, report)
    duplicates.save_groups(conn, fs, rule.name, max_distance, _rows(report.groups))
    report.seconds = time.perf_counter() - started
    return report


def check_searchable(fs: FeatureSet, rows: int, to_search: int) -> None:
    """Refuse, before anything is written, a search that would scan exactly a large set."""
    if to_search and not fs.indexed and rows > EXACT_ROWS:
        raise FeatureSetError(
            f"feature set {fs.name!r} has {rows:,} images and no HNSW index; expected an index "
            f"for finding duplicates in more than {EXACT_ROWS:,} images "
            f"(build one: simsearch index-build --feature-set {fs.name})"
        )


def read_all_files(conn: Connection, fs: FeatureSet, report: Report, progress: Progress) -> None:
    """Read the files not read before (or changed since), a page at a time, two at once
    (hashing and decoding release the GIL for most of their time)."""
    roots = [Path(r) for r in images.image_roots(conn)]
    after = ""
    with ThreadPoolExecutor(max_workers=2) as pool:
        while True:
            page = duplicates.files_to_check(conn, fs, after, FILE_BATCH)
            if not page:
                break
            after = page[-1][0]
            checked = list(pool.map(lambda row: _check_file(row, roots), page))
            report.unreadable += sum(unreadable for _, unreadable in checked)
            facts = [f for f, _ in checked if f is not None]
            duplicates.save_files(conn, facts)
            report.files_read += len(facts)
            progress.update(f"{fs.name}: read {report.files_read:,} files")
    progress.clear()


def _check_file(
    row: tuple[str, str, str | None, int | None, int | None], roots: list[Path]
) -> tuple[duplicates.FileFacts | None, bool]:
    """New facts for one image's file (None when the stored ones still hold), and whether the
    picture cannot be read."""
    object_id, path, old_path, old_bytes, old_mtime = row
    file = resolve(path, roots)
    if file is None:
        if old_path == path and old_bytes is None:
            return None, True  # known to be missing already
        return filefacts.missing(object_id, path, "no such file"), True
    if filefacts.unchanged(old_path, old_bytes, old_mtime, path, file.stat()):
        return None, False
    read = filefacts.read_facts(object_id, path, file)
    return read, read.phash is None


def search(
    conn: Connection,
    fs: FeatureSet,
    radius: float,
    to_search: int,
    report: Report,
    progress: Progress,
    batch: int,
    workers: int,
    on_batch: BatchHook | None,
) -> None:
    """Ask the index for every image not yet searched at ``radius``: pages of ids read by
    keyset, each batch searched and committed on a connection of its own worker."""
    if not to_search:
        return
    started = time.perf_counter()

    def page_batches() -> Iterable[list[str]]:
        after = ""
        while True:
            page = duplicates.to_search(conn, fs, radius, after, batch * max(1, workers))
            if not page:
                return
            after = page[-1]
            for i in range(0, len(page), batch):
                yield page[i : i + batch]

    def note(done: int) -> None:
        report.searched = done
        rate = done / max(time.perf_counter() - started, 1e-9)
        progress.update(f"{fs.name}: searched {done:,}/{to_search:,} images ({rate:,.0f}/s)")
        if on_batch is not None:
            on_batch(done)

    if workers <= 1:
        for ids in page_batches():
            report.capped += search_batch(conn, fs, ids, radius)
            note(report.searched + len(ids))
    else:
        _search_parallel(fs, radius, report, page_batches(), workers, note)
    progress.clear()


def _search_parallel(
    fs: FeatureSet,
    radius: float,
    report: Report,
    batches: Iterable[list[str]],
    workers: int,
    note: Callable[[int], None],
) -> None:
    """Batches on ``workers`` connections at once (one HNSW scan is single-threaded), at most
    two batches in flight per worker so that memory stays bounded by the batch."""
    import threading

    local = threading.local()
    opened: list[Any] = []

    def work(ids: list[str]) -> tuple[int, int]:
        if not hasattr(local, "conn"):
            cm = connect.connect(migrate=False)
            local.conn = cm.__enter__()
            opened.append(cm)
        return len(ids), search_batch(local.conn, fs, ids, radius)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: list[Any] = []
            for ids in batches:
                pending.append(pool.submit(work, ids))
                while len(pending) >= 2 * workers:
                    done, capped = pending.pop(0).result()
                    report.capped += capped
                    note(report.searched + done)
            for future in pending:
                done, capped = future.result()
                report.capped += capped
                note(report.searched + done)
    finally:
        for cm in opened:
            cm.__exit__(None, None, None)


def search_batch(conn: Connection, fs: FeatureSet, ids: Sequence[str], radius: float) -> int:
    """Search one batch and commit its pairs and progress together; images capped."""
    exact = not fs.indexed
    pairs: list[tuple[str, str, float]] = []
    capped: list[str] = []
    asking, k = list(ids), FIRST_K
    while asking:
        rows = knn.neighbours_of(conn, fs, asking, k, exact=exact, ef_search=max(DUPLICATE_EF, k))
        inside: dict[str, int] = dict.fromkeys(asking, 0)
        for query, neighbour, distance in rows:
            if distance <= radius:
                inside[query] += 1
                pairs.append((query, neighbour, distance))
        full = [q for q, n in inside.items() if n >= k]
        if not full:
            break
        if k >= MAX_K:
            capped.extend(full)
            break
        # All k inside the radius: there may be more. Ask those again with a larger k (their
        # pairs found so far come back again and are stored once).
        asking, k = full, min(k * 4, MAX_K)
    duplicates.save_search(conn, fs, pairs, ids, radius, capped)
    return len(capped)


def group(
    conn: Connection, fs: FeatureSet, rule: Rule, max_size: int, report: Report
) -> list[DuplicateGroup]:
    """Check the stored candidates with the rule, group them, choose the keepers."""
    moved = duplicates.moved_ids(conn, fs)
    refused = duplicates.decisions(conn)
    found: dict[tuple[str, str], float] = {
        (a, b): d for a, b, d in duplicates.pairs_within(conn, fs, rule.radius)
    }
    # Same bytes are the same vector, so the search finds them; this is belt and braces.
    found.update({(a, b): d for a, b, d in duplicates.identical_files(conn, fs)})
    candidates = [(a, b, d) for (a, b), d in found.items() if not {a, b} & moved]
    ids = sorted({x for a, b, _ in candidates for x in (a, b)})
    known: dict[str, Member] = {}
    for i in range(0, len(ids), FILE_BATCH * 10):
        known.update(duplicates.members(conn, ids[i : i + FILE_BATCH * 10]))

    def passes(a: str, b: str, distance: float) -> bool:
        key = (a, b) if a < b else (b, a)
        return key not in refused and rule.admits(distance, known.get(a), known.get(b))

    seen: dict[tuple[str, str], float] = {}
    admitted = []
    for a, b, distance in candidates:
        if passes(a, b, distance):
            admitted.append((a, b, distance))
            seen[(a, b) if a < b else (b, a)] = distance
    report.pairs = len(admitted)

    def lookup(pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
        measured = duplicates.distances(conn, fs, [p for p in pairs if not set(p) & moved])
        answer = {p: d for p, d in measured.items() if passes(p[0], p[1], d)}
        seen.update(answer)
        return answer

    # The rule has judged every pair already (it is more than a distance threshold).
    groups = group_pairs(admitted, math.inf, max_size=max_size, lookup=lookup)
    return [
        _describe(number, g.members, g.diameter, rule, known, seen)
        for number, g in enumerate(groups, 1)
    ]


def _describe(
    number: int,
    ids: Sequence[str],
    diameter: float,
    rule: Rule,
    known: dict[str, Member],
    seen: dict[tuple[str, str], float],
) -> DuplicateGroup:
    photos = [_photo(x, known.get(x)) for x in ids]
    keeper, reason = choose_keeper(photos)
    hashes = {known[x].sha256 if x in known else None for x in ids}
    label = "exact" if len(hashes) == 1 and None not in hashes else rule.name
    members = []
    for x in ids:
        m = known.get(x)
        distance = 0.0 if x == keeper.object_id else seen[_key(x, keeper.object_id)]
        members.append(
            GroupMember(
                x,
                m.path if m else None,
                distance,
                m.width if m else None,
                m.height if m else None,
                m.bytes if m else None,
            )
        )
    members.sort(key=lambda g: (g.object_id != keeper.object_id, g.distance, g.object_id))
    return DuplicateGroup(number, label, diameter, keeper.object_id, reason, tuple(members))


def _photo(object_id: str, member: Member | None) -> Photo:
    if member is None:
        return Photo(object_id)
    return Photo(
        object_id, member.width, member.height, member.bytes, member.exif_tags, member.taken
    )


def _key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _rows(groups: list[DuplicateGroup]) -> list[GroupRow]:
    return [
        GroupRow(
            g.number,
            m.object_id,
            g.level,
            g.diameter,
            m.distance,
            m.object_id == g.keep,
            g.reason if m.object_id == g.keep else None,
        )
        for g in groups
        for m in g.members
    ]


def not_duplicate(first: str, second: str) -> bool:
    """Record a person's decision that two images are not duplicates; False if known."""
    if first == second:
        raise InputError(f"expected two different object ids, found {first!r} twice")
    with connect.connect() as conn:
        return duplicates.add_decision(conn, first, second)
