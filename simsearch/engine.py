"""The resident search state behind ``simsearch serve``: a connection pool and warm models.

Created once per server process. Every request reads the feature sets afresh (one cheap query),
so feature sets added or re-indexed while the server runs are seen at once; models are loaded
once (``model.load_model`` keeps one ONNX session per file) and reloaded when a model file
changes on disk.

Threads: requests run in a thread pool. ``onnxruntime.InferenceSession.run`` is thread-safe
(documented by onnxruntime: one session may be run from several threads at once), and each
run uses all cores by itself, so a semaphore admits at most ``inference_slots`` runs at a time
rather than letting eight requests fight over two cores. Database work borrows a connection
from the pool only for as long as it needs one.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import database, model, search, sql_server, sql_surface, store
from .errors import FeatureSetError, ImageError, InputError
from .filters import parse_where
from .model import Overrides
from .preprocess import load_batch
from .scan import Match

DEFAULT_MAX_PIXELS = 50_000_000  # a 50-megapixel photo; larger uploads are refused (422)


class NotFound(InputError):
    """An object id, image file or feature set the server does not know (HTTP 404)."""


@dataclass(frozen=True)
class Result:
    object_id: str
    distance: float
    path: str | None
    width: int | None
    height: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "distance": self.distance,
            "path": self.path,
            "width": self.width,
            "height": self.height,
        }


class Engine:
    def __init__(
        self,
        image_roots: list[Path] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        pool_size: int = 4,
        inference_slots: int | None = None,
    ) -> None:
        self.image_roots = [r.resolve() for r in image_roots or []]
        self.max_pixels = max_pixels
        self._pool_size = pool_size
        self._pool: Any = None
        self._inference = threading.BoundedSemaphore(inference_slots or _default_slots())
        self._model_stats: dict[Path, tuple[int, int]] = {}
        self._model_lock = threading.Lock()

    # --- life ----------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (migrating the schema if due), fill the pool, load and warm every model."""
        from pgvector.psycopg import register_vector
        from psycopg_pool import ConnectionPool

        with database.connect() as conn:  # the same checks and upgrade as any command
            sets = store.feature_sets(conn)
            conn.commit()
        self._pool = ConnectionPool(
            database.conninfo(),
            min_size=1,
            max_size=self._pool_size,
            configure=register_vector,
            open=True,
            name="simsearch",
        )
        for fs in sets:
            with contextlib.suppress(InputError):  # a feature set whose model is gone still lists
                chosen = search.model_for(fs, None, None)
                spec = chosen.preprocess
                shape = (
                    (1, spec.height, spec.width, 3)
                    if spec.layout == "NHWC"
                    else (1, 3, spec.height, spec.width)
                )
                chosen.run(np.zeros(shape, np.float32))  # the first run allocates; pay it now

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[store.Connection]:
        with self._pool.connection() as conn:
            yield conn

    # --- reading -------------------------------------------------------------------------

    def feature_sets(self) -> list[dict[str, Any]]:
        with self.connection() as conn:
            statuses = store.status(conn)
        return [
            {
                "name": st.feature_set.name,
                "dimension": st.feature_set.dimension,
                "model": st.feature_set.model,
                "rows": st.rows,
                "indexed": st.feature_set.indexed,
            }
            for st in statuses
        ]

    def choose(self, name: str | None) -> store.FeatureSet:
        with self.connection() as conn:
            sets = store.feature_sets(conn)
            conn.commit()
        try:
            return search.choose_feature_set(sets, name)
        except FeatureSetError as exc:
            if name is not None:
                raise NotFound(str(exc)) from None
            raise

    def describe(self, matches: list[Match]) -> list[Result]:
        """Each match with what the images table knows about it."""
        with self.connection() as conn:
            rows = sql_server.image_rows(conn, [m.object_id for m in matches])
        empty = sql_server.ImageRow(None, None, None, None)
        return [Result(m.object_id, m.distance, *rows.get(m.object_id, empty)[:3]) for m in matches]

    # --- searching -----------------------------------------------------------------------

    def search_upload(
        self,
        data: bytes,
        filename: str,
        n: int,
        feature_set: str | None,
        exact: bool,
        ef: int,
        where: list[str] | None = None,
        timings: dict[str, float] | None = None,
    ) -> tuple[store.FeatureSet, list[Match]]:
        """The nearest stored images to an uploaded photo: the CLI's embedding, the CLI's SQL.

        ``timings`` receives milliseconds per phase (for the Server-Timing header).
        """
        clock = _Clock(timings)
        condition = parse_where(where or [])
        fs = self.choose(feature_set)
        self._check_pixels(data)
        chosen = self._model(fs, None, None)
        clock.lap("prepare")
        vector = self._embed_bytes(chosen, data, filename, clock)
        with self.connection() as conn:
            matches = _knn(conn, fs, vector, n, exact, ef, condition)
        clock.lap("knn")
        return fs, matches

    def similar(
        self,
        object_id: str,
        n: int,
        feature_set: str | None,
        exact: bool,
        ef: int,
        where: list[str] | None = None,
    ) -> tuple[store.FeatureSet, list[Match]]:
        """The nearest stored images to a stored one, by its stored vector."""
        condition = parse_where(where or [])
        fs = self.choose(feature_set)
        with self.connection() as conn:
            vector = sql_server.stored_vector(conn, fs, object_id)
            if vector is None:
                raise NotFound(f"feature set {fs.name!r} has no object id {object_id!r}")
            return fs, _knn(conn, fs, vector, n, exact, ef, condition)

    def cli_query(self, request: dict[str, Any]) -> list[list[Match]]:
        """What ``simsearch query`` would print: the same function, on a pooled connection."""
        images = [Path(p) for p in request["images"]]
        given = dict(request.get("overrides") or {})
        for key in ("mean", "std"):  # JSON lists; Preprocess compares them as tuples
            if given.get(key) is not None:
                given[key] = tuple(float(v) for v in given[key])
        overrides = Overrides(**given)
        self._refresh_models()
        with self._inference, self.connection() as conn:
            return search.query_on(
                conn,
                images,
                n=int(request.get("n", 10)),
                feature_set=request.get("feature_set"),
                model=request.get("model"),
                exact=bool(request.get("exact", False)),
                ef_search=int(request.get("ef_search") or search.DEFAULT_EF_SEARCH),
                overrides=overrides,
            )

    # --- files ---------------------------------------------------------------------------

    def image_file(self, object_id: str) -> Path:
        """The file the database records for ``object_id``; never a path from the request."""
        with self.connection() as conn:
            row = sql_server.image_rows(conn, [object_id]).get(object_id)
            recorded = store.image_roots(conn)
        if row is None:
            raise NotFound(f"no image with object id {object_id!r}")
        if row.path is None:
            raise NotFound(f"object id {object_id!r} has no image file recorded")
        roots = [*self.image_roots, *(Path(r) for r in recorded)]
        found = resolve(row.path, roots)
        if found is None:
            raise NotFound(f"the image file of object id {object_id!r} is not on this machine")
        return found

    # --- internals -----------------------------------------------------------------------

    def _model(
        self, fs: store.FeatureSet, ref: str | None, overrides: Overrides | None
    ) -> model.Model:
        self._refresh_models()
        return search.model_for(fs, ref, overrides)

    def _refresh_models(self) -> None:
        """Forget a session whose model file was replaced, so the next request loads the new one."""
        with self._model_lock:
            for path in list(model._sessions):  # model keeps one session per file
                try:
                    st = path.stat()
                    stamp = (st.st_mtime_ns, st.st_size)
                except OSError:
                    stamp = (0, 0)
                known = self._model_stats.setdefault(path, stamp)
                if known != stamp:
                    model._sessions.pop(path, None)
                    self._model_stats[path] = stamp

    def _check_pixels(self, data: bytes) -> None:
        """Refuse an image whose declared canvas is too large, before decoding any of it."""
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except (
            UnidentifiedImageError,
            Image.DecompressionBombError,
            OSError,
            SyntaxError,
            ValueError,
        ):
            raise ImageError("the uploaded file is not an image Pillow can read") from None
        if width * height > self.max_pixels:
            raise ImageTooLarge(
                f"the uploaded image is {width}x{height} ({width * height:,} pixels); "
                f"at most {self.max_pixels:,} pixels are accepted"
            )

    def _embed_bytes(
        self, chosen: model.Model, data: bytes, filename: str, clock: _Clock | None = None
    ) -> np.ndarray:
        # Through a file, so an upload is embedded by exactly the code `simsearch query` runs:
        # Model.embed_files is run(load_batch(paths, preprocess)), split here so that decoding
        # (Pillow releases the GIL) overlaps another request's inference.
        suffix = Path(filename).suffix.lower() if filename else ""
        fd, name = tempfile.mkstemp(prefix="simsearch-upload-", suffix=suffix[:10])
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            try:
                batch = load_batch([Path(name)], chosen.preprocess)
            except ImageError as exc:
                raise ImageError(str(exc).replace(name, "the uploaded file")) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        clock = clock or _Clock(None)
        clock.lap("decode")
        with self._inference:
            clock.lap("queue")
            vector: np.ndarray = chosen.run(batch)[0]
        clock.lap("embed")
        return vector


def _knn(
    conn: store.Connection,
    fs: store.FeatureSet,
    vector: np.ndarray,
    n: int,
    exact: bool,
    ef: int,
    condition: dict[str, Any],
) -> list[Match]:
    """The same SQL as `simsearch query`: plain kNN, or with --where the filtered function."""
    if condition:
        ef_filtered = max(ef, search.DEFAULT_CANDIDATES)
        return sql_surface.knn_filtered(conn, fs, vector, n, condition, exact, ef_filtered)
    return store.knn(conn, fs, vector, n, exact, ef, search.DEFAULT_CANDIDATES)


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


class _Clock:
    """Milliseconds per phase into ``timings``, when the caller wants them."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = (now - self.last) * 1000
        self.last = now


class ImageTooLarge(ImageError):
    """An uploaded image declares more pixels than the server accepts (HTTP 422)."""


def _default_slots() -> int:
    return max(1, (os.cpu_count() or 1) // 2)
