"""``simsearch query`` and ``simsearch scan``: a photo in, the nearest stored images out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from . import config, database, store
from .errors import FeatureSetError, ModelError
from .model import Model, Overrides, load_model
from .preprocess import Preprocess
from .scan import Match, exact_scan
from .shards import iter_shards, list_shards

# On 100,000 x 1280 clustered vectors with held-out queries, ef_search 100 gave recall@10 0.977
# and 200 gave 0.992 (docs/benchmarks.md): 200 is the smallest setting measured at >= 0.99.
# The best DEFAULT_CANDIDATES of the ef_search found are re-ranked by exact distance.
DEFAULT_EF_SEARCH = 200
DEFAULT_CANDIDATES = 100


def choose_feature_set(sets: Sequence[store.FeatureSet], name: str | None) -> store.FeatureSet:
    """The named feature set, or the only one there is."""
    if name is not None:
        for fs in sets:
            if fs.name == name:
                return fs
        known = ", ".join(repr(fs.name) for fs in sets) or "none yet"
        raise FeatureSetError(f"no feature set named {name!r}; the database has {known}")
    if not sets:
        raise FeatureSetError("the database has no feature sets yet; run `simsearch ingest` first")
    if len(sets) > 1:
        names = ", ".join(repr(fs.name) for fs in sets)
        raise FeatureSetError(f"several feature sets ({names}); choose one with --feature-set")
    return sets[0]


def model_for(fs: store.FeatureSet, model: str | None, overrides: Overrides | None) -> Model:
    """The model a feature set's queries are embedded with, preprocessing as it was stored."""
    overrides = overrides or Overrides()
    if model is not None:
        chosen = load_model(model, overrides)
    else:
        chosen = load_model(fs.model or config.model_path(), overrides)
        if fs.model is not None and fs.preprocess:
            chosen = chosen.with_preprocess(overrides.apply(Preprocess.from_dict(fs.preprocess)))
    declared = chosen.interface.dimension
    if declared is not None and declared != fs.dimension:
        raise ModelError(
            f"{chosen.path}: gives {declared}-d vectors; feature set {fs.name!r} holds "
            f"{fs.dimension}-d (name the model it was made with: --model)"
        )
    return chosen


def query(
    images: Sequence[Path],
    n: int = 10,
    feature_set: str | None = None,
    model: str | None = None,
    exact: bool = False,
    ef_search: int = DEFAULT_EF_SEARCH,
    candidates: int = DEFAULT_CANDIDATES,
    overrides: Overrides | None = None,
) -> list[list[Match]]:
    """The n nearest stored images for each query image, nearest first."""
    with database.connect() as conn:
        return query_on(
            conn, images, n, feature_set, model, exact, ef_search, candidates, overrides
        )


def query_on(
    conn: store.Connection,
    images: Sequence[Path],
    n: int = 10,
    feature_set: str | None = None,
    model: str | None = None,
    exact: bool = False,
    ef_search: int = DEFAULT_EF_SEARCH,
    candidates: int = DEFAULT_CANDIDATES,
    overrides: Overrides | None = None,
) -> list[list[Match]]:
    """``query`` on a given connection: the one path both the CLI and the server take."""
    fs = choose_feature_set(store.feature_sets(conn), feature_set)
    conn.commit()
    chosen = model_for(fs, model, overrides)
    vectors = chosen.embed_files(images)
    return [store.knn(conn, fs, vector, n, exact, ef_search, candidates) for vector in vectors]


def query_vector(
    vector: np.ndarray,
    n: int = 10,
    feature_set: str | None = None,
    exact: bool = False,
    ef_search: int = DEFAULT_EF_SEARCH,
    candidates: int = DEFAULT_CANDIDATES,
) -> list[Match]:
    """The n stored vectors nearest to ``vector``."""
    with database.connect() as conn:
        fs = choose_feature_set(store.feature_sets(conn), feature_set)
        conn.commit()
        return store.knn(conn, fs, np.asarray(vector, np.float32), n, exact, ef_search, candidates)


def scan(
    feature_dir: Path,
    image: Path,
    n: int = 10,
    model: str | None = None,
    overrides: Overrides | None = None,
) -> list[Match]:
    """The exact NumPy scan over the shards on disk: no database."""
    listing = list_shards(feature_dir)
    chosen = load_model(model or config.model_path(), overrides)
    (vector,) = chosen.embed_files([image])
    return exact_scan(iter_shards(listing, dimension=len(vector)), vector, n)


BATCH_IMAGES = 32  # images per inference batch: bounds memory, keeps the model busy


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


def query_many(
    images: Sequence[Path] = (),
    ids: Sequence[str] = (),
    n: int = 10,
    feature_set: str | None = None,
    model: str | None = None,
    exact: bool = False,
    ef_search: int = DEFAULT_EF_SEARCH,
    candidates: int = DEFAULT_CANDIDATES,
    overrides: Overrides | None = None,
    where: Mapping[str, object] | None = None,
) -> list[tuple[str, list[Match]]]:
    """One result list per query image (path) and per stored id, on one connection and model.

    A stored id's own row is left out of its results, as in ``simsearch_similar``. ``where``
    is the JSON filter of ``simsearch.filters``; filtered queries always return n rows when
    at least n rows match.
    """
    from . import sql_surface

    with database.connect() as conn:
        fs = choose_feature_set(store.feature_sets(conn), feature_set)
        conn.commit()

        def search(vector: np.ndarray, exclude: str | None) -> list[Match]:
            if where or exclude is not None:
                return sql_surface.knn_filtered(
                    conn, fs, vector, n, where, exact, max(ef_search, candidates), exclude
                )
            return store.knn(conn, fs, vector, n, exact, ef_search, candidates)

        results: list[tuple[str, list[Match]]] = []
        for object_id in ids:
            vector = sql_surface.stored_vector(conn, fs, object_id)
            results.append((object_id, search(vector, object_id)))
        if images:
            chosen = model_for(fs, model, overrides)
            for start in range(0, len(images), BATCH_IMAGES):
                batch = images[start : start + BATCH_IMAGES]
                for path, vector in zip(batch, chosen.embed_files(batch), strict=True):
                    results.append((str(path), search(vector, None)))
        return results
