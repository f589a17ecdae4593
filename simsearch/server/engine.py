"""The resident search state behind ``simsearch serve``: a connection pool and warm models.

Created once per server process. Every request reads the feature sets afresh (one cheap query),
so feature sets added or re-indexed while the server runs are seen at once; models are loaded
once (``model.load_model`` keeps one ONNX session per file and replaces it when the file
changes on disk).

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
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import config, search
from ..db import connect, feature_sets, images
from ..db.feature_sets import Connection, FeatureSet
from ..errors import FeatureSetError, ImageError, ImageTooLarge, InputError, NotFound
from ..files import resolve
from ..model import Model
from ..options import QueryOptions
from ..preprocess import load_batch
from ..results import Match, Result


class Engine:
    def __init__(
        self,
        image_roots: list[Path] | None = None,
        max_pixels: int = config.MAX_PIXELS,
        pool_size: int = 4,
        inference_slots: int | None = None,
    ) -> None:
        self.image_roots = [r.resolve() for r in image_roots or []]
        self.max_pixels = max_pixels
        self._pool_size = pool_size
        self._pool: Any = None
        self._inference = threading.BoundedSemaphore(inference_slots or _default_slots())
        self._duplicates: dict[tuple[str, str | None, float | None], Any] = {}  # last answers

    # --- life ----------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (migrating the schema if due), fill the pool, load and warm every model."""
        from psycopg_pool import ConnectionPool

        # The same checks and upgrade as any search; with read replicas, only the checks.
        with connect.connect(read_only=True) as conn:
            sets = feature_sets.feature_sets(conn)
        self._pool = ConnectionPool(**_pool_options(), max_size=self._pool_size)
        for fs in sets:
            with contextlib.suppress(InputError):  # a feature set whose model is gone still lists
                search.model_for(fs, None, None).warm_up()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        with self._pool.connection() as conn:
            yield conn

    # --- reading -------------------------------------------------------------------------

    def feature_sets(self) -> list[dict[str, Any]]:
        with self.connection() as conn:
            statuses = feature_sets.status(conn)
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

    def choose(self, name: str | None) -> FeatureSet:
        with self.connection() as conn:
            try:
                return feature_sets.resolve(conn, name)
            except FeatureSetError as exc:
                if name is not None:
                    raise NotFound(str(exc)) from None
                raise

    def describe(self, matches: list[Match]) -> list[Result]:
        """Each match with what the images table knows about its file."""
        with self.connection() as conn:
            records = images.image_records(conn, [m.object_id for m in matches])
        described = []
        for m in matches:
            record = records.get(m.object_id)
            known = (record.path, record.width, record.height) if record else (None, None, None)
            described.append(Result(m.object_id, m.distance, *known))
        return described

    def file_paths(self, matches: list[Match]) -> dict[str, str | None]:
        """Each match's file, an absolute path (for `simsearch query`, which prints them)."""
        with self.connection() as conn:
            return search.file_paths(conn, [m.object_id for m in matches])

    # --- searching -----------------------------------------------------------------------

    def search_upload(
        self,
        data: bytes,
        filename: str,
        options: QueryOptions,
        timings: dict[str, float] | None = None,
    ) -> tuple[FeatureSet, list[Match]]:
        """The nearest stored images to an uploaded photo: the CLI's embedding, the CLI's SQL.

        ``timings`` receives milliseconds per phase (for the Server-Timing header).
        """
        clock = _Clock(timings)
        fs = self.choose(options.feature_set)
        self._check_pixels(data)
        chosen = search.options_model(fs, options)
        clock.lap("prepare")
        vector = self._embed_bytes(chosen, data, filename, clock)
        with self.connection() as conn:
            matches = search.search_vector(conn, fs, vector, options)
        clock.lap("knn")
        return fs, matches

    def similar(self, object_id: str, options: QueryOptions) -> tuple[FeatureSet, list[Match]]:
        """The nearest stored images to a stored one, by its stored vector, itself left out."""
        fs = self.choose(options.feature_set)
        with self.connection() as conn:
            return fs, search.search_id(conn, fs, object_id, options)

    def cli_query(self, paths: list[Path], options: QueryOptions) -> list[list[Match]]:
        """What ``simsearch query`` would print: the same function, on a pooled connection."""
        with self._inference, self.connection() as conn:
            return search.query_on(conn, paths, options)

    def duplicates(
        self,
        feature_set: str | None,
        level: str | None,
        max_distance: float | None,
        fresh: bool = True,
    ) -> Any:
        """``simsearch duplicates`` on a pooled connection (incremental: after the first run
        only new images are searched); a ``duplicates.finder.Report``. ``fresh`` False reuses
        the last answer for the same question, so that paging through it costs nothing."""
        from ..duplicates import finder

        fs = self.choose(feature_set)
        key = (fs.name, level, max_distance)
        if not fresh and key in self._duplicates:
            return self._duplicates[key]
        with self.connection() as conn:
            report = finder.find_duplicates(fs.name, level, max_distance, conn=conn, workers=1)
        self._duplicates[key] = report
        return report

    # --- files ---------------------------------------------------------------------------

    def image_file(self, object_id: str) -> Path:
        """The file the database records for ``object_id``; never a path from the request.

        First the files recorded by folder (``image_files``: the same image indexed from two
        folders is found in either), then ``images.path`` under each known folder.
        """
        with self.connection() as conn:
            row = images.image_records(conn, [object_id]).get(object_id)
            files = images.files_of(conn, [object_id]).get(object_id, [])
            recorded = images.image_roots(conn)
        if row is None:
            raise NotFound(f"no image with object id {object_id!r}")
        roots = [*self.image_roots, *(Path(r) for r in recorded)]
        allowed = {str(root) for root in roots}
        for root, path in files:
            # Only under a folder still recorded (or --image-root): a dropped one is not served.
            found = resolve(path, [Path(root)]) if root in allowed else None
            if found is not None:
                return found
        if row.path is None:
            raise NotFound(f"object id {object_id!r} has no image file recorded")
        found = resolve(row.path, roots)
        if found is None:
            raise NotFound(f"the image file of object id {object_id!r} is not on this machine")
        return found

    # --- internals -----------------------------------------------------------------------

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
        self, chosen: Model, data: bytes, filename: str, clock: _Clock | None = None
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


def _pool_options() -> dict[str, Any]:
    """The pool's connections: to the one server, or with read replicas configured, each to
    the first replica that answers (then the primary), checked before use so that a replica
    that went down is replaced by the next."""
    from psycopg_pool import ConnectionPool

    options: dict[str, Any] = {
        "min_size": 1,
        "kwargs": {"autocommit": True},
        "configure": connect.configure,
        "open": True,
        "name": "simsearch",
    }
    # A connection broken by a server restart is found out and replaced before a request
    # uses it.
    options["check"] = ConnectionPool.check_connection
    if not config.replica_urls():
        # Asked anew for each new connection: after the embedded PostgreSQL restarts (on
        # another port, perhaps) new connections reach it, and it is started if it is down.
        return {**options, "conninfo": connect.conninfo}
    return {**options, "conninfo": "", "connection_class": connect.ReadConnection}


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


def _default_slots() -> int:
    return max(1, (os.cpu_count() or 1) // 2)
