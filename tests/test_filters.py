"""--where parsing: conditions into the JSON filter the SQL functions take; bad input refused."""

from __future__ import annotations

import pytest

from simsearch.errors import InputError
from simsearch.filters import meta_value, parse_where


def test_equality_ranges_and_types() -> None:
    got = parse_where(
        ["color=red", "width>=1024", "width<4000", "rating>3.5", "added_at<2026-01-01", "ok=true"]
    )
    assert got == {
        "color": {"=": "red"},
        "width": {">=": 1024, "<": 4000},
        "rating": {">": 3.5},
        "added_at": {"<": "2026-01-01T00:00:00+00:00"},
        "ok": {"=": True},
    }


def test_values_keep_their_text() -> None:
    assert parse_where(['code="5"', "code2=007", "path=a/b=c.jpg", "title=two words"]) == {
        "code": {"=": "5"},
        "code2": {"=": "007"},
        "path": {"=": "a/b=c.jpg"},
        "title": {"=": "two words"},
    }
    assert meta_value("NaN") == "NaN"
    assert meta_value("12") == 12


def test_dates_with_time_and_zone() -> None:
    got = parse_where(["added_at>=2026-01-01T09:00:00+09:00", "added_at<2026-02-01T00:00"])
    assert got["added_at"] == {
        ">=": "2026-01-01T09:00:00+09:00",
        "<": "2026-02-01T00:00:00+00:00",
    }


def test_hostile_text_is_only_a_value() -> None:
    got = parse_where(["color=red'; DROP TABLE images; --"])
    assert got == {"color": {"=": "red'; DROP TABLE images; --"}}


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("color", "expected KEY=VALUE"),
        ("=red", "expected KEY=VALUE"),
        ("color=", "expected a value"),
        ("co'lor=red", "expected a key of letters"),
        ("1abc=2", "expected a key of letters"),
        ("width>=big", "expected a whole number for width"),
        ("height=1.5", "expected a whole number for height"),
        ("added_at<yesterday", "expected an ISO date"),
    ],
)
def test_bad_conditions(condition: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_where([condition])


def test_same_key_and_operator_twice() -> None:
    with pytest.raises(InputError, match="given twice"):
        parse_where(["width>=1", "width>=2"])
