"""Grouping near-duplicate photos without chaining, and choosing the copy to keep. Pure: no SQL,
no I/O.

Input: candidate pairs ``(a, b, distance)`` of object ids, as the database finds them (batched
kNN within a radius). Output: groups in which *every* pair of members is within the threshold
(complete linkage), so that A~B and B~C never put A and C together when A and C are far apart,
as single linkage (connected components) would.

Pairs that are not among the candidates count as too far apart: that can only split a group,
never chain one. A caller that can measure exact distances for a set of ids (the database can)
passes ``lookup``, and the pairs missing inside each connected component are asked for once.

What the caller does around it:
- a level with a hash check (``Level.max_hash_distance``): drop the candidate pairs whose
  perceptual hashes differ in more bits before grouping, and have ``lookup`` leave such pairs
  out of its answer, so that they count as too far apart;
- hard links (one file under two paths, ids that name the same device and inode) are not
  duplicates of each other: collapse them to one member before grouping and list the other
  paths with it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

Pair = tuple[str, str, float]
IdPair = tuple[str, str]  # always ordered: a < b
# Exact distances for the pairs asked for; pairs left out of the answer count as too far apart.
DistanceLookup = Callable[[Sequence[IdPair]], Mapping[IdPair, float]]

DEFAULT_MAX_SIZE = 50
# Asking for every missing pair of a component costs n^2/2 distances: past this many pairs the
# component is grouped from its candidate pairs alone (which can split a group, never chain one).
DEFAULT_LOOKUP_LIMIT = 20_000


@dataclass(frozen=True)
class Level:
    """A named preset: when two photos count as copies of one another.

    The numbers are for the shipped model (EfficientNet-Lite0, 1280-d, Euclidean distance); see
    docs/duplicates.md for how they were measured, and ``--max-distance`` for other models.
    A pair is a duplicate when its distance is at most ``max_distance`` and, when
    ``max_hash_distance`` is set, the 64-bit perceptual hashes of the two files differ in at most
    that many bits. ``vectors_only_distance`` is the threshold to use when the files cannot be
    read (vectors ingested without their images): it keeps the same precision at lower recall.
    """

    name: str
    max_distance: float
    max_hash_distance: int | None
    vectors_only_distance: float


# Calibrated by ``python -m bench.calibrate_duplicates`` (docs/duplicates.md) on 39 real photos,
# 507 edited copies and 106 same-scene pairs: strict keeps precision about 0.99 on the same-scene
# pairs, loose about 0.95; exact takes copies that look identical (JPEG quality 95, EXIF-rotated).
LEVELS: dict[str, Level] = {
    "exact": Level("exact", max_distance=1.30, max_hash_distance=None, vectors_only_distance=1.30),
    "strict": Level("strict", max_distance=8.75, max_hash_distance=16, vectors_only_distance=3.05),
    "loose": Level("loose", max_distance=10.25, max_hash_distance=24, vectors_only_distance=4.45),
}


@dataclass(frozen=True)
class Group:
    """Photos that are all within the threshold of one another."""

    members: tuple[str, ...]  # sorted object ids
    diameter: float  # the largest distance between two members


def group_pairs(
    pairs: Iterable[Pair],
    max_distance: float,
    max_size: int = DEFAULT_MAX_SIZE,
    lookup: DistanceLookup | None = None,
    lookup_limit: int = DEFAULT_LOOKUP_LIMIT,
) -> list[Group]:
    """Complete-linkage groups of the photos in ``pairs``, at most ``max_size`` members each.

    Clusters are merged closest first (the complete-linkage distance of two clusters is the
    largest distance between their members); a merge whose distance exceeds ``max_distance`` or
    whose size exceeds ``max_size`` is never made. Ties are broken by object id, so the result
    does not depend on the order of ``pairs``. Groups come sorted by diameter, then members;
    photos left alone are not groups.
    """
    if max_size < 2:
        raise ValueError(f"max_size must be at least 2, not {max_size}")
    known = _within(pairs, max_distance)
    groups: list[Group] = []
    for component, distances in _components(known):
        if lookup is not None:
            distances.update(_ask(lookup, component, distances, max_distance, lookup_limit))
        groups.extend(_agglomerate(sorted(component), distances, max_size))
    return sorted(groups, key=lambda g: (g.diameter, g.members))


def _within(pairs: Iterable[Pair], max_distance: float) -> dict[IdPair, float]:
    """Candidate pairs within the threshold, keyed (smaller id, larger id). A pair reported
    twice (once from each side) keeps its larger distance: the cautious one for linkage."""
    known: dict[IdPair, float] = {}
    for a, b, distance in pairs:
        if a == b or not distance <= max_distance:  # `not <=` also drops NaN
            continue
        key = (a, b) if a < b else (b, a)
        known[key] = max(distance, known.get(key, distance))
    return known


def _components(known: Mapping[IdPair, float]) -> list[tuple[set[str], dict[IdPair, float]]]:
    """Connected components of the pair graph (union-find), each with its own pairs: groups
    never cross components, so each is grouped on its own."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps the trees shallow
            x = parent[x]
        return x

    for a, b in known:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, set[str]] = {}
    for x in parent:
        members.setdefault(root(x), set()).add(x)
    edges: dict[str, dict[IdPair, float]] = {r: {} for r in members}
    for pair, distance in known.items():
        edges[root(pair[0])][pair] = distance
    return [(members[r], edges[r]) for r in sorted(members)]


def _ask(
    lookup: DistanceLookup,
    component: set[str],
    distances: Mapping[IdPair, float],
    max_distance: float,
    limit: int,
) -> dict[IdPair, float]:
    """The component's pairs missing from the candidates, measured by ``lookup`` in one call."""
    ids = sorted(component)
    if len(ids) * (len(ids) - 1) // 2 - len(distances) > limit:
        return {}
    missing = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :] if (a, b) not in distances]
    if not missing:
        return {}
    answer = lookup(missing)
    wanted = set(missing)
    return {p: d for p, d in answer.items() if p in wanted and d <= max_distance}


def _agglomerate(ids: list[str], distances: Mapping[IdPair, float], max_size: int) -> list[Group]:
    """Complete linkage over a sparse distance graph, closest merge first.

    A cluster is named by its smallest member. ``links`` holds the complete-linkage distance
    between two clusters only while every pair of their members is known to be within the
    threshold; when two clusters merge, the new cluster's link to a third one is the larger of
    the two old links (Lance-Williams for complete linkage), and it is dropped when either old
    link was missing, since some pair across would then be too far apart.
    """
    members: dict[str, list[str]] = {x: [x] for x in ids}
    diameter: dict[str, float] = dict.fromkeys(ids, 0.0)
    links: dict[IdPair, float] = dict(distances)
    neighbours: dict[str, set[str]] = {x: set() for x in ids}
    for a, b in links:
        neighbours[a].add(b)
        neighbours[b].add(a)
    heap = [(d, a, b) for (a, b), d in links.items()]
    heapq.heapify(heap)
    while heap:
        distance, a, b = heapq.heappop(heap)
        if links.get((a, b)) != distance:
            continue  # stale: a merge since changed or removed this link
        if len(members[a]) + len(members[b]) > max_size:
            _unlink(links, neighbours, a, b)  # clusters only grow: this merge stays too big
            continue
        for c in sorted((neighbours[a] | neighbours[b]) - {a, b}):
            via_a, via_b = links.get(_key(a, c)), links.get(_key(b, c))
            _unlink(links, neighbours, a, c)
            _unlink(links, neighbours, b, c)
            if via_a is not None and via_b is not None:
                merged = max(via_a, via_b)
                links[_key(a, c)] = merged
                neighbours[a].add(c)
                neighbours[c].add(a)
                heapq.heappush(heap, (merged, *_key(a, c)))
        _unlink(links, neighbours, a, b)
        # a < b (keys are ordered), so the merged cluster keeps the name a: its smallest member.
        members[a].extend(members.pop(b))
        diameter[a] = max(diameter[a], diameter.pop(b), distance)
        del neighbours[b]
    return [Group(tuple(sorted(m)), diameter[name]) for name, m in members.items() if len(m) > 1]


def _key(a: str, b: str) -> IdPair:
    return (a, b) if a < b else (b, a)


def _unlink(links: dict[IdPair, float], neighbours: dict[str, set[str]], a: str, b: str) -> None:
    links.pop(_key(a, b), None)
    neighbours[a].discard(b)
    neighbours[b].discard(a)


# --------------------------------------------------------------------------- the copy to keep


@dataclass(frozen=True)
class Photo:
    """What the keeper rule looks at; unknown values lose to known ones."""

    object_id: str
    width: int | None = None  # as displayed
    height: int | None = None
    bytes: int | None = None  # file size
    exif_tags: int = 0  # how many EXIF tags the file carries
    taken: datetime | None = None  # the earliest date known: EXIF DateTimeOriginal, else mtime

    @property
    def pixels(self) -> int | None:
        if self.width is None or self.height is None:
            return None
        return self.width * self.height


def choose_keeper(members: Sequence[Photo]) -> tuple[Photo, str]:
    """The copy to keep and why: the largest pixel count, then the largest file, then the richer
    EXIF (more tags), then the earliest date, then the smallest object id.

    The reason names the first rule that told the keeper from the runner-up, so that a person
    can check it ("largest picture: 4000x3000 against 2000x1500").
    """
    if not members:
        raise ValueError("choose_keeper needs at least one photo")
    ranked = sorted(members, key=_rank)
    keeper = ranked[0]
    if len(ranked) == 1:
        return keeper, "the only copy"
    return keeper, _reason(keeper, ranked[1])


def _rank(photo: Photo) -> tuple[float, float, int, float, str]:
    """Smaller is better; a missing value ranks after every known one."""
    return (
        -photo.pixels if photo.pixels is not None else math.inf,
        -photo.bytes if photo.bytes is not None else math.inf,
        -photo.exif_tags,
        photo.taken.timestamp() if photo.taken is not None else math.inf,
        photo.object_id,
    )


def _reason(keeper: Photo, runner_up: Photo) -> str:
    ahead, behind = _rank(keeper), _rank(runner_up)
    if ahead[0] != behind[0]:
        return f"largest picture: {_size(keeper)} against {_size(runner_up)}"
    same = [f"same pixel count ({_size(keeper)})"]
    if ahead[1] != behind[1]:
        return f"{same[0]}; largest file: {_bytes(keeper)} against {_bytes(runner_up)}"
    same.append(f"same file size ({_bytes(keeper)})")
    if ahead[2] != behind[2]:
        return (
            f"{', '.join(same)}; richer EXIF: {keeper.exif_tags} tags against {runner_up.exif_tags}"
        )
    same.append(f"same EXIF tag count ({keeper.exif_tags})")
    if ahead[3] != behind[3]:
        return f"{', '.join(same)}; earliest date: {_date(keeper)} against {_date(runner_up)}"
    return f"{', '.join(same)}, same date; the smallest object id"


def _size(photo: Photo) -> str:
    if photo.pixels is None:
        return "unknown size"
    return f"{photo.width}x{photo.height} ({photo.pixels / 1e6:.1f} MP)"


def _bytes(photo: Photo) -> str:
    return "unknown" if photo.bytes is None else f"{photo.bytes:,} bytes"


def _date(photo: Photo) -> str:
    return "no date" if photo.taken is None else photo.taken.isoformat(sep=" ")
