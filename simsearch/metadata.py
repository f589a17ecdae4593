"""``simsearch meta import``: image metadata from CSV or JSON lines, upserted by object id.

Known columns (path, bytes, width, height, added_at) go to the images table's columns; every
other field is merged into ``images.meta`` (jsonb). A bad row is rejected with one line that
says which row and why; the good rows are still imported.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .db import connect
from .db.images import upsert_images
from .errors import InputError
from .filters import iso_timestamp
from .gallery import ImageRecord
from .shards import MAX_OBJECT_ID_BYTES

INTEGER_FIELDS = ("bytes", "width", "height")
BATCH = 5000
# CSV cells that read as JSON numbers become numbers, so range filters work on them; a
# leading zero ("007") stays text, as it is more likely a code than a quantity.
_NUMBER = re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$")


@dataclass
class ImportReport:
    matched: int = 0
    added: int = 0
    rejected: list[str] = field(default_factory=list)  # one line each: "row N: reason"

    def summary(self) -> str:
        return (
            f"{self.matched:,} rows matched existing images, {self.added:,} added, "
            f"{len(self.rejected):,} rejected"
        )


def import_file(path: Path) -> ImportReport:
    """Upsert every valid record of ``path`` (.csv, or .jsonl / .ndjson / .json lines)."""
    records = _records(path)
    report = ImportReport()
    pending: dict[str, ImageRecord] = {}
    with connect.connect() as conn:
        for where, record in records:
            try:
                row = to_row(record)
            except InputError as exc:
                report.rejected.append(f"{where}: {exc}")
                continue
            earlier = pending.get(row.object_id)
            pending[row.object_id] = _merge(earlier, row) if earlier else row
            if len(pending) >= BATCH:
                _flush(conn, pending, report)
        _flush(conn, pending, report)
    return report


def _flush(conn: Any, pending: dict[str, ImageRecord], report: ImportReport) -> None:
    matched, added = upsert_images(conn, list(pending.values()))
    report.matched += matched
    report.added += added
    pending.clear()


def _merge(old: ImageRecord, new: ImageRecord) -> ImageRecord:
    """The same id twice in one file: later fields win, as two imports in a row would."""
    return ImageRecord(
        object_id=new.object_id,
        path=new.path if new.path is not None else old.path,
        bytes=new.bytes if new.bytes is not None else old.bytes,
        width=new.width if new.width is not None else old.width,
        height=new.height if new.height is not None else old.height,
        added_at=new.added_at if new.added_at is not None else old.added_at,
        meta={**old.meta, **new.meta},
    )


def _records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected a .csv or .jsonl metadata file)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_records(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl_records(path)
    raise InputError(f"{path}: expected a .csv or .jsonl file, found {suffix or 'no extension'}")


def _csv_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "object_id" not in reader.fieldnames:
            raise InputError(
                f"{path}: expected a header row with an object_id column, found "
                f"{', '.join(reader.fieldnames or []) or 'no header'}"
            )
        for number, cells in enumerate(reader, 2):  # row 1 is the header
            if None in cells:
                yield (
                    f"row {number}",
                    {
                        "__error__": f"{len(cells[None]) + len(reader.fieldnames)} "
                        f"cells, expected {len(reader.fieldnames)}"
                    },
                )
                continue
            yield (
                f"row {number}",
                {k: _csv_value(k, v) for k, v in cells.items() if v not in ("", None)},
            )


def _csv_value(key: str, text: str) -> Any:
    if key in ("object_id", "path", "added_at") or key in INTEGER_FIELDS:
        return text
    return json.loads(text) if _NUMBER.match(text) else text


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"line {number}", {"__error__": f"not valid JSON ({exc.msg})"}
                continue
            if not isinstance(record, dict):
                yield (
                    f"line {number}",
                    {"__error__": f"expected a JSON object, found {type(record).__name__}"},
                )
                continue
            yield f"line {number}", record


def to_row(record: dict[str, Any]) -> ImageRecord:
    """A record as an image row, or InputError saying what is wrong with it."""
    if "__error__" in record:
        raise InputError(record["__error__"])
    object_id = record.get("object_id")
    if not isinstance(object_id, str) or not object_id:
        raise InputError(f"expected a non-empty object_id string, found {object_id!r}")
    if len(object_id.encode("utf-8")) > MAX_OBJECT_ID_BYTES:
        raise InputError(f"object_id is longer than {MAX_OBJECT_ID_BYTES} bytes")
    row = ImageRecord(object_id=object_id)
    for key, value in record.items():
        if key == "object_id" or value is None:
            continue
        if key in INTEGER_FIELDS:
            setattr(row, key, _count(key, value))
        elif key == "path":
            if not isinstance(value, str):
                raise InputError(f"expected path to be text, found {value!r}")
            row.path = value
        elif key == "added_at":
            row.added_at = _timestamp(value)
        elif key == "meta" and isinstance(value, dict):
            row.meta.update(value)  # a nested "meta" object is the metadata itself
        else:
            row.meta[key] = value
    return row


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InputError(f"expected {key} to be a whole number >= 0, found {value!r}")
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        raise InputError(f"expected {key} to be a whole number >= 0, found {value!r}") from None
    if not isinstance(number, int) or number < 0 or (number > 2**31 - 1 and key != "bytes"):
        raise InputError(f"expected {key} to be a whole number >= 0, found {value!r}")
    return number


def _timestamp(value: Any) -> str:
    try:
        return iso_timestamp(str(value))
    except ValueError:
        raise InputError(
            f"expected added_at as an ISO date or date-time, found {value!r}"
        ) from None
