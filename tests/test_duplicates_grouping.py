"""The pure core of ``simsearch duplicates``: no chaining, the size cap, determinism, the copy
to keep, the perceptual hash. No database, no files."""

from __future__ import annotations

import io
import itertools
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from PIL import Image

from simsearch.duplicates.grouping import (
    LEVELS,
    Group,
    IdPair,
    Photo,
    choose_keeper,
    group_pairs,
)
from simsearch.duplicates.phash import hash_distance, perceptual_hash


def all_pairs_within(group: Group, distances: dict[IdPair, float], limit: float) -> bool:
    return all(distances[(a, b)] <= limit for a, b in itertools.combinations(group.members, 2))


def test_empty_input_gives_no_groups() -> None:
    assert group_pairs([], max_distance=5.0) == []
    assert group_pairs([("a", "b", 9.0)], max_distance=5.0) == []  # nothing within the threshold


def test_a_pair_is_a_group_with_its_distance_as_diameter() -> None:
    assert group_pairs([("b", "a", 2.5)], max_distance=5.0) == [Group(("a", "b"), 2.5)]


def test_no_chaining_a_near_b_near_c_but_a_far_from_c() -> None:
    # A~B (1.0) and B~C (2.0) are candidates; A-C (9.0) is not within the threshold.
    pairs = [("A", "B", 1.0), ("B", "C", 2.0), ("A", "C", 9.0)]
    groups = group_pairs(pairs, max_distance=5.0)
    assert groups == [Group(("A", "B"), 1.0)]  # the closer pair wins; C is left alone
    assert not any({"A", "C"} <= set(g.members) for g in groups)


def test_a_pair_missing_from_the_candidates_counts_as_too_far() -> None:
    # A-C was never found: without a way to measure it, A and C must not share a group.
    groups = group_pairs([("A", "B", 1.0), ("B", "C", 1.5)], max_distance=5.0)
    assert groups == [Group(("A", "B"), 1.0)]


def test_lookup_measures_missing_pairs_once_per_component() -> None:
    asked: list[list[IdPair]] = []

    def lookup(missing: Sequence[IdPair]) -> dict[IdPair, float]:
        asked.append(list(missing))
        return {("A", "C"): 2.0}

    groups = group_pairs([("A", "B", 1.0), ("B", "C", 1.5)], 5.0, lookup=lookup)
    assert groups == [Group(("A", "B", "C"), 2.0)]
    assert asked == [[("A", "C")]]
    # A lookup that finds the pair too far (or leaves it out) keeps A and C apart.
    far = group_pairs([("A", "B", 1.0), ("B", "C", 1.5)], 5.0, lookup=lambda m: {("A", "C"): 7.0})
    assert far == [Group(("A", "B"), 1.0)]


def test_a_long_chain_is_cut_into_tight_groups() -> None:
    # Photos on a line one step apart: single linkage would make one group of all ten.
    ids = [f"p{i}" for i in range(10)]
    pairs = [(a, b, float(j - i)) for (i, a), (j, b) in itertools.combinations(enumerate(ids), 2)]
    distances = {(a, b): d for a, b, d in pairs}
    groups = group_pairs(pairs, max_distance=2.0)
    assert all(g.diameter <= 2.0 for g in groups)
    assert all(all_pairs_within(g, distances, 2.0) for g in groups)
    assert sum(len(g.members) for g in groups) == 10


def test_size_cap() -> None:
    # Seven photos all 1.0 apart: one group without a cap, groups of at most three with it.
    ids = [f"x{i}" for i in range(7)]
    pairs = [(a, b, 1.0) for a, b in itertools.combinations(ids, 2)]
    assert [g.members for g in group_pairs(pairs, 5.0)] == [tuple(ids)]
    capped = group_pairs(pairs, 5.0, max_size=3)
    assert all(len(g.members) <= 3 for g in capped)
    assert sorted(m for g in capped for m in g.members) == ids[:6]  # 3 + 3; the seventh alone
    with pytest.raises(ValueError):
        group_pairs(pairs, 5.0, max_size=1)


def test_groups_are_the_same_whatever_the_order_of_the_pairs() -> None:
    rng = random.Random(7)
    points = {f"id{i:03d}": (rng.uniform(0, 10), rng.uniform(0, 10)) for i in range(60)}
    pairs = []
    for a, b in itertools.combinations(sorted(points), 2):
        (xa, ya), (xb, yb) = points[a], points[b]
        distance = round(((xa - xb) ** 2 + (ya - yb) ** 2) ** 0.5, 1)  # rounding makes ties
        if distance <= 2.0:
            pairs.append((a, b, distance) if rng.random() < 0.5 else (b, a, distance))
    distances = {(min(a, b), max(a, b)): d for a, b, d in pairs}
    expected = group_pairs(pairs, 2.0, max_size=4)
    for _ in range(5):
        rng.shuffle(pairs)
        assert group_pairs(pairs, 2.0, max_size=4) == expected
    assert expected and all(len(g.members) <= 4 for g in expected)
    assert all(all_pairs_within(g, distances, 2.0) for g in expected)
    members = [m for g in expected for m in g.members]
    assert len(members) == len(set(members))  # a photo is in one group at most


def test_a_pair_reported_from_both_sides_keeps_the_larger_distance() -> None:
    groups = group_pairs([("a", "b", 1.0), ("b", "a", 1.2), ("a", "a", 0.0)], 5.0)
    assert groups == [Group(("a", "b"), 1.2)]


def test_levels_are_ordered_from_exact_to_loose() -> None:
    exact, strict, loose = LEVELS["exact"], LEVELS["strict"], LEVELS["loose"]
    assert exact.max_distance <= strict.vectors_only_distance <= loose.vectors_only_distance
    assert strict.max_distance <= loose.max_distance
    assert strict.max_hash_distance is not None and loose.max_hash_distance is not None
    assert strict.max_hash_distance <= loose.max_hash_distance


BIG = Photo("b.jpg", 4000, 3000, 2_000_000, 10, datetime(2024, 1, 2))
SMALL = Photo("a.jpg", 2000, 1500, 3_000_000, 40, datetime(2020, 1, 1))


def test_keeper_largest_pixel_count_first() -> None:
    keeper, reason = choose_keeper([SMALL, BIG])
    assert keeper is BIG
    assert reason == "largest picture: 4000x3000 (12.0 MP) against 2000x1500 (3.0 MP)"


def test_keeper_then_file_size_then_exif_then_date_then_id() -> None:
    base = Photo("c.jpg", 800, 600, 100_000, 5, datetime(2022, 5, 1, 10, 0))
    bigger_file = Photo("d.jpg", 600, 800, 120_000, 5, datetime(2022, 5, 1, 10, 0))
    keeper, reason = choose_keeper([base, bigger_file])
    assert keeper is bigger_file
    assert "largest file: 120,000 bytes against 100,000 bytes" in reason

    richer = Photo("e.jpg", 800, 600, 100_000, 12, datetime(2023, 1, 1))
    keeper, reason = choose_keeper([base, richer])
    assert keeper is richer and "richer EXIF: 12 tags against 5" in reason

    earlier = Photo("f.jpg", 800, 600, 100_000, 5, datetime(2021, 1, 1))
    keeper, reason = choose_keeper([base, earlier])
    assert keeper is earlier and "earliest date: 2021-01-01 00:00:00" in reason

    twin = Photo("a-twin.jpg", 800, 600, 100_000, 5, datetime(2022, 5, 1, 10, 0))
    keeper, reason = choose_keeper([base, twin])
    assert keeper is twin and reason.endswith("the smallest object id")


def test_keeper_unknown_values_lose_to_known_ones() -> None:
    unknown = Photo("0.jpg")
    keeper, reason = choose_keeper([unknown, SMALL])
    assert keeper is SMALL and "against unknown size" in reason
    dated = Photo("z.jpg", taken=datetime(2019, 1, 1))
    assert choose_keeper([unknown, dated])[0] is dated


def test_keeper_of_one_and_of_none() -> None:
    assert choose_keeper([SMALL]) == (SMALL, "the only copy")
    with pytest.raises(ValueError):
        choose_keeper([])


def _picture(seed: int) -> Image.Image:
    """A smooth random picture (low frequencies dominate, as in photos), 320x240."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((320, 240), Image.Resampling.BICUBIC)


def _reopened(image: Image.Image, **save: Any) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save)
    buffer.seek(0)
    return Image.open(buffer)


def test_perceptual_hash_survives_copies_and_tells_pictures_apart() -> None:
    picture = _picture(1)
    original = perceptual_hash(_reopened(picture, quality=95))
    assert 0 <= original < 2**63
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to display: undoes the stored rotation below
    rotated = _reopened(picture.transpose(Image.Transpose.ROTATE_90), quality=95, exif=exif)
    assert hash_distance(original, perceptual_hash(rotated)) <= 2
    smaller = _reopened(picture.resize((160, 120)), quality=50)
    assert hash_distance(original, perceptual_hash(smaller)) <= 6
    other = perceptual_hash(_reopened(_picture(2), quality=95))
    assert hash_distance(original, other) >= 16
    assert hash_distance(0, 2**64 - 1) == 64
