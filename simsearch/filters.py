"""``--where`` conditions: parsed and checked here, into the JSON filter the SQL functions take.

``width>=1024``, ``color=red``, ``added_at<2026-01-01`` become
``{"width": {">=": 1024}, "color": {"=": "red"}, "added_at": {"<": "2026-01-01T00:00:00+00:00"}}``,
the same form ``simsearch_knn(..., filter => ...)`` accepts in SQL. Nothing here builds SQL:
the filter travels as one bound jsonb parameter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import date, datetime, timezone
from typing import Any

from .errors import InputError

OPERATORS = ("!=", ">=", "<=", "=", "<", ">")  # longest first, so ">=" is not read as ">"
INTEGER_COLUMNS = ("bytes", "width", "height")
TEXT_COLUMNS = ("object_id", "path")
DATE_COLUMNS = ("added_at",)
COLUMNS = TEXT_COLUMNS + INTEGER_COLUMNS + DATE_COLUMNS
# Metadata keys: letters, digits and _ . - : (a key is a bound value anyway; this keeps
# typos such as a stray quote or space from silently matching nothing).
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
_CONDITION = re.compile(r"^\s*([^<>=!\s]+)\s*(!=|>=|<=|=|<|>)\s*(.*?)\s*$", re.DOTALL)

Filter = dict[str, dict[str, Any]]


def parse_where(conditions: Iterable[str]) -> Filter:
    """``KEY OP VALUE`` strings into the JSON filter; repeat a key for a range."""
    result: Filter = {}
    for text in conditions:
        key, op, value = parse_condition(text)
        ops = result.setdefault(key, {})
        if op in ops:
            raise InputError(
                f"--where {text!r}: {key} {op} is given twice; expected each key and operator once"
            )
        ops[op] = value
    return result


def parse_condition(text: str) -> tuple[str, str, Any]:
    match = _CONDITION.match(text)
    if match is None:
        raise InputError(
            f"--where {text!r}: expected KEY=VALUE or KEY<op>VALUE with <op> one of "
            f"{', '.join(OPERATORS)}, e.g. color=red or 'width>=1024'"
        )
    key, op, raw = match.groups()
    if not _KEY.match(key):
        raise InputError(
            f"--where {text!r}: expected a key of letters, digits, _ . - : (starting with a "
            f"letter or _), found {key!r}"
        )
    if raw == "":
        raise InputError(f"--where {text!r}: expected a value after {op}, found nothing")
    return key, op, _value(text, key, op, raw)


def _value(text: str, key: str, op: str, raw: str) -> Any:
    if key in INTEGER_COLUMNS:
        try:
            return int(raw)
        except ValueError:
            raise InputError(
                f"--where {text!r}: expected a whole number for {key}, found {raw!r}"
            ) from None
    if key in DATE_COLUMNS:
        return _timestamp(text, key, raw)
    if key in TEXT_COLUMNS:
        return raw
    return meta_value(raw)


def meta_value(raw: str) -> Any:
    """A metadata value: a JSON number, true, false or "quoted string"; anything else is text."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, int | float | str | bool) and value == value else raw


def _timestamp(text: str, key: str, raw: str) -> str:
    try:
        return iso_timestamp(raw)
    except ValueError:
        raise InputError(
            f"--where {text!r}: expected an ISO date such as 2026-01-01 or "
            f"2026-01-01T12:00:00+09:00 for {key}, found {raw!r}"
        ) from None


def iso_timestamp(raw: str) -> str:
    """An ISO date or date-time as a full ISO date-time (ValueError if it is neither): a date
    means its midnight UTC, a time without a zone means UTC."""
    if len(raw) == 10:
        moment = datetime.combine(date.fromisoformat(raw), datetime.min.time())
    else:
        moment = datetime.fromisoformat(raw)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()
