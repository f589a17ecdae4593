"""The HTTP application of ``simsearch serve``: the JSON API, the web page, the upload limit.

The same app answers on a loopback TCP port (the API and the page at ``/``) and on the private
Unix socket, where ``POST /v1/query`` also answers: the thin ``simsearch query`` client's door,
which reads image files by path and so is refused over TCP. ``run.serve`` runs it.

FastAPI is imported here only, never by the thin client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import psycopg
from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__, config
from ..db import connect
from ..errors import SimsearchError, one_line
from ..options import QueryOptions
from ..results import Result
from . import apidocs, thumbnails
from .client import FINGERPRINT_HEADER
from .engine import Engine

MAX_RESULTS = 1000
MAX_DUPLICATE_GROUPS = 200  # groups per page of GET /duplicates
WEB_DIR = Path(__file__).parent / "web"
IMAGE_CACHE = "public, max-age=86400"

EF = "the recall knob, pgvector's hnsw.ef_search: higher is slower and surer"
WHERE = Query(
    [],
    description="metadata filters as in `simsearch query --where`, e.g. `width>=1024` or "
    "`camera=X100`; repeat for several (all must hold)",
)


def search_options(
    n: int = Query(config.RESULTS, ge=1, le=MAX_RESULTS, description="how many results"),
    feature_set: str | None = None,
    exact: bool = False,
    ef: int = Query(config.EF_SEARCH, ge=1, le=10_000, description=EF),
    where: list[str] = WHERE,
) -> QueryOptions:
    """The query parameters every search endpoint takes, as one QueryOptions."""
    return QueryOptions(n=n, feature_set=feature_set, exact=exact, ef_search=ef, where=tuple(where))


# --- the application ----------------------------------------------------------------------


def create_app(
    engine: Engine,
    *,
    fingerprint: str,
    auto: bool = False,
    max_upload: int = config.MAX_UPLOAD_MB * 2**20,
    thumbnail_dir: Path | None = None,
    on_database_lost: Callable[[], None] | None = None,
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="simsearch",
        version=__version__,
        description="Similar-image search on PostgreSQL + pgvector.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load their files from a CDN: blank offline. /docs is ours.
        docs_url=None,
        redoc_url=None,
    )
    app.state.traffic = Traffic()
    app.add_middleware(UploadLimit, limit=max_upload, traffic=app.state.traffic)
    thumbs = thumbnail_dir or config.home() / "thumbnails"

    @app.exception_handler(SimsearchError)
    async def simsearch_error(request: Request, exc: SimsearchError) -> JSONResponse:
        return _error(exc.http_status, str(exc))

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> JSONResponse:
        if isinstance(exc, psycopg.OperationalError) and on_database_lost is not None:
            on_database_lost()  # e.g. the embedded server was stopped: its new port is not ours
        return _error(503, f"database: {one_line(exc)}")

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Whether the server answers, and for what: version, pid, database, fingerprint."""
        return {
            "status": "ok",
            "version": __version__,
            "pid": os.getpid(),
            "database": connect.describe(),
            "fingerprint": fingerprint,
            "auto": auto,
            "requests": app.state.traffic.requests,
        }

    @app.get("/feature-sets")
    def feature_sets() -> list[dict[str, Any]]:
        """Each feature set: name, dimension, model, rows, whether an ANN index serves it."""
        return engine.feature_sets()

    @app.post("/search")
    def search(
        response: Response,
        image: UploadFile = File(..., description="the query photo"),  # noqa: B008
        options: QueryOptions = Depends(search_options),  # noqa: B008
    ) -> dict[str, Any]:
        """The stored images nearest to an uploaded photo (multipart field ``image``).

        The Server-Timing header gives milliseconds per phase: prepare, decode, queue (waiting
        for the model), embed, knn, describe.
        """
        data = image.file.read()
        timings: dict[str, float] = {}
        fs, matches = engine.search_upload(data, image.filename or "", options, timings)
        started = time.perf_counter()
        answer = _answer(fs.name, engine.describe(matches))
        timings["describe"] = (time.perf_counter() - started) * 1000
        response.headers["Server-Timing"] = ", ".join(
            f"{name};dur={ms:.1f}" for name, ms in timings.items()
        )
        return answer

    @app.get("/similar/{object_id:path}")
    def similar(
        object_id: str,
        options: QueryOptions = Depends(search_options),  # noqa: B008
    ) -> dict[str, Any]:
        """The stored images nearest to a stored one, itself left out (as `query --id` and
        ``simsearch_similar`` in SQL)."""
        fs, matches = engine.similar(object_id, options)
        return _answer(fs.name, engine.describe(matches))

    @app.get("/duplicates")
    def duplicates(
        feature_set: str | None = None,
        level: Literal["exact", "strict", "loose"] = "strict",
        max_distance: float | None = Query(
            None, description="instead of a level: every two members within this distance"
        ),
        page: int = Query(1, ge=1),
        per_page: int = Query(20, ge=1, le=MAX_DUPLICATE_GROUPS),
    ) -> dict[str, Any]:
        """Groups of duplicate photos, as `simsearch duplicates --json`, a page at a time:
        each with its level, diameter, the copy to keep and why, and every member.

        Page 1 runs the (incremental) search and grouping; later pages page through the answer
        page 1 gave, so that paging costs nothing."""
        report = engine.duplicates(feature_set, level, max_distance, fresh=page == 1)
        groups = report.groups[(page - 1) * per_page : page * per_page]
        return {
            "feature_set": report.feature_set,
            "level": report.level,
            "max_distance": max_distance,
            "total_groups": len(report.groups),
            "page": page,
            "per_page": per_page,
            "pages": max(1, -(-len(report.groups) // per_page)),
            "groups": [g.to_json() for g in groups],
        }

    @app.get("/images/{object_id:path}", response_class=FileResponse)
    def image(object_id: str) -> FileResponse:
        """The image file the database records for ``object_id``."""
        path = engine.image_file(object_id)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": IMAGE_CACHE})

    @app.get("/thumbnails/{object_id:path}", response_class=FileResponse)
    def thumbnail(
        object_id: str,
        size: int = Query(thumbnails.DEFAULT_SIZE, ge=thumbnails.MIN_SIZE, le=thumbnails.MAX_SIZE),
    ) -> FileResponse:
        """A JPEG at most ``size`` pixels on its longer side; made once and kept on disk."""
        made = thumbnails.thumbnail(engine.image_file(object_id), thumbs, size)
        return FileResponse(made, media_type="image/jpeg", headers={"Cache-Control": IMAGE_CACHE})

    @app.post("/v1/query", include_in_schema=False)
    async def cli_query(request: Request) -> JSONResponse:
        # The thin CLI's door: reads image files by path, so only over the private socket.
        if not _over_unix_socket(request):
            return _error(404, "Not Found")
        if request.headers.get(FINGERPRINT_HEADER) != fingerprint:
            return JSONResponse(
                {"error": "this server runs other code or settings", "auto": auto},
                status_code=409,
            )
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict) or not isinstance(body.get("images"), list):
                raise ValueError
        except ValueError:
            return _error(400, "expected a JSON object with a list of image paths")
        options = QueryOptions.from_json(body.get("options") or {})
        paths = [Path(str(p)) for p in body["images"]]
        results = await asyncio.to_thread(engine.cli_query, paths, options)
        files = await asyncio.to_thread(engine.file_paths, [m for r in results for m in r])
        return JSONResponse(
            {
                "matches": [
                    [
                        {"object_id": m.object_id, "distance": m.distance, "path": files[m[0]]}
                        for m in r
                    ]
                    for r in results
                ]
            }
        )

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(apidocs.page(app.openapi()))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


def _answer(feature_set: str, results: list[Result]) -> dict[str, Any]:
    return {"feature_set": feature_set, "results": [r.to_json() for r in results]}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _over_unix_socket(request: Request) -> bool:
    # uvicorn reports a Unix socket's server address as (path, None), a TCP one as (host, port).
    server = request.scope.get("server")
    return server is not None and server[1] is None


class Traffic:
    """Requests seen and when the last one came: for /health and the idle timeout."""

    def __init__(self) -> None:
        self.requests = 0
        self.last_request = time.monotonic()


class UploadLimit:
    """ASGI middleware: count requests into ``traffic``, and refuse request bodies over
    ``limit`` bytes with 413 before they are read or spooled.

    The declared Content-Length is checked first; a body sent without one (chunked) is counted
    as it arrives and cut off at the limit. Plain ASGI: Starlette's @middleware("http") would
    cost every request a task group and a memory stream.
    """

    def __init__(self, app: ASGIApp, limit: int, traffic: Traffic) -> None:
        self.app = app
        self.limit = limit
        self.traffic = traffic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.traffic.last_request = time.monotonic()
            self.traffic.requests += 1
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = _error(413, f"the upload is larger than the {self.limit:,} bytes accepted")
        await response({"type": "http"}, _no_body, send)


class _TooLarge(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
