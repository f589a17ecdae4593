"""``simsearch query``: photos or stored images in, the nearest stored images out.

Every entry point (the CLI in-process, the resident server, the library) goes through
``search_vector`` with one ``QueryOptions``. Searching by a stored image leaves that image out of
its own results, everywhere: `query --id`, ``GET /similar/ID`` and ``simsearch_similar`` in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import config
from .db import connect, feature_sets, images, knn
from .db.feature_sets import Connection, FeatureSet
from .errors import InputError, NotFound
from .filters import COLUMNS, parse_where
from .model import Model, Overrides, load_model
from .options import QueryOptions
from .preprocess import Preprocess
from .results import Match


def options_from(options: QueryOptions | None, fields: dict[str, Any]) -> QueryOptions:
    """``options`` with keyword fields over it: ``query(images, n=5)`` reads as it should."""
    given = dict(fields)
    if isinstance(given.get("overrides"), Overrides):
        given["overrides"] = given["overrides"].to_dict()
    return (options or QueryOptions()).replace(**given) if given else options or QueryOptions()


def model_for(fs: FeatureSet, model: str | None, overrides: Overrides | None) -> Model:
    """The model a feature set's queries are embedded with, preprocessing as it was stored."""
    overrides = overrides or Overrides()
    if model is not None:
        chosen = load_model(model, overrides)
    else:
        chosen = load_model(fs.model or config.model_path(), overrides)
        if fs.model is not None and fs.preprocess:
            chosen = chosen.with_preprocess(overrides.apply(Preprocess.from_dict(fs.preprocess)))
    chosen.check_dimension(
        fs.dimension, fs.name, hint=" (name the model it was made with: --model)"
    )
    return chosen


def options_model(fs: FeatureSet, options: QueryOptions) -> Model:
    return model_for(fs, options.model, Overrides.from_dict(options.overrides))


def search_vector(
    conn: Connection,
    fs: FeatureSet,
    vector: np.ndarray,
    options: QueryOptions,
    exclude: str | None = None,
) -> list[Match]:
    """The stored vectors nearest to ``vector`` under ``options``; ``exclude`` left out."""
    where = parse_where(options.where)
    matches = knn.knn(
        conn,
        fs,
        np.asarray(vector, np.float32),
        options.n,
        exact=options.exact,
        ef_search=options.ef_search,
        candidates=options.candidates,
        where=where,
        exclude=exclude,
    )
    if where and len(matches) < options.n:
        # Few or no matches: a mistyped key (colour for color) would explain it. Checked only
        # now, so that filters that match pay nothing.
        check_filter_keys(conn, where)
    return matches


def check_filter_keys(conn: Connection, where: dict[str, Any]) -> None:
    """Refuse a filter key that is neither a column of images nor a key of any image's meta."""
    unknown = [key for key in where if key not in COLUMNS]
    if not unknown:
        return
    missing = [key for key in unknown if not images.has_meta_key(conn, key)]
    if missing:
        known = images.meta_keys(conn, 21)
        keys = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") or "none yet"
        raise InputError(
            f"no image has the metadata key {missing[0]!r}; expected a column of images "
            f"({', '.join(COLUMNS)}) or a metadata key ({keys})"
        )


def file_paths(conn: Connection, object_ids: Sequence[str]) -> dict[str, str | None]:
    """Object id -> the absolute path of a file recorded for it (one that exists, if any)."""
    recorded = images.files_of(conn, object_ids)
    return {oid: _pick_file(recorded.get(oid, [])) for oid in object_ids}


def _pick_file(files: list[tuple[str, str]]) -> str | None:
    candidates = [str(Path(root) / path) if root else path for root, path in files]
    for candidate in candidates:
        if Path(candidate).is_file():
            return candidate
    return candidates[0] if candidates else None


def search_id(
    conn: Connection, fs: FeatureSet, object_id: str, options: QueryOptions
) -> list[Match]:
    """The stored images nearest to a stored one, by its stored vector, itself left out."""
    vector = knn.stored_vector(conn, fs, object_id)
    if vector is None:
        raise NotFound(f"feature set {fs.name!r} has no object id {object_id!r}")
    return search_vector(conn, fs, vector, options, exclude=object_id)


def query_on(
    conn: Connection,
    images: Sequence[Path],
    options: QueryOptions | None = None,
    **fields: Any,
) -> list[list[Match]]:
    """The nearest stored images for each query photo, on a given connection: the one path
    both the CLI and the server take."""
    options = options_from(options, fields)
    fs = feature_sets.resolve(conn, options.feature_set)
    chosen = options_model(fs, options)
    results: list[list[Match]] = []
    for start in range(0, len(images), config.BATCH):  # bounds memory on a folder of photos
        batch = images[start : start + config.BATCH]
        results.extend(search_vector(conn, fs, v, options) for v in chosen.embed_files(batch))
    return results


def query(
    images: Sequence[Path], options: QueryOptions | None = None, **fields: Any
) -> list[list[Match]]:
    """The nearest stored images for each query photo, nearest first."""
    with connect.connect(read_only=True) as conn:
        return query_on(conn, images, options, **fields)


def query_vector(
    vector: np.ndarray, options: QueryOptions | None = None, **fields: Any
) -> list[Match]:
    """The stored vectors nearest to ``vector``."""
    options = options_from(options, fields)
    with connect.connect(read_only=True) as conn:
        fs = feature_sets.resolve(conn, options.feature_set)
        return search_vector(conn, fs, vector, options)


def query_many(
    images: Sequence[Path] = (),
    ids: Sequence[str] = (),
    options: QueryOptions | None = None,
    **fields: Any,
) -> list[tuple[str, list[Match]]]:
    """One result list per stored id, then per query photo, on one connection and model."""
    options = options_from(options, fields)
    with connect.connect(read_only=True) as conn:
        fs = feature_sets.resolve(conn, options.feature_set)
        results = [(object_id, search_id(conn, fs, object_id, options)) for object_id in ids]
        if images:
            matches = query_on(conn, images, options)
            results.extend(zip((str(p) for p in images), matches, strict=True))
        return results


def expand_images(paths: Sequence[Path]) -> list[Path]:
    """Query images: files as given, folders as the image files under them, sorted."""
    from .gallery import list_images

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(path / relative for relative in list_images(path))
        else:
            found.append(path)
    return found
