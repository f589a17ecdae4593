"""``simsearch serve``: the HTTP API, the web page, and the resident process behind ``query``.

One process loads each feature set's model and a connection pool once, then answers:

- on a loopback TCP port (default 127.0.0.1:8000): the JSON API and the web page at ``/``;
- on a private Unix socket under SIMSEARCH_HOME/run (0600 in a 0700 directory): the same API
  plus ``POST /v1/query``, which the thin ``simsearch query`` client uses. That endpoint reads
  image files by path, so it answers only on the socket, whose owner may read them anyway.

The socket is bound under a temporary name and renamed into place once the models are warm, so
a client that sees the socket finds a server ready to answer. SIGINT and SIGTERM end requests
in flight, close the pool and remove the socket and pid file.

FastAPI and uvicorn are imported here only, never by the thin client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from . import __version__, config, daemon, database, thumbnails
from .client import FINGERPRINT_HEADER
from .engine import DEFAULT_MAX_PIXELS, Engine, ImageTooLarge, NotFound, Result
from .errors import DatabaseError, InputError, SimsearchError
from .search import DEFAULT_EF_SEARCH

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD = 20 * 2**20  # bytes; a camera JPEG is 3-12 MB
MAX_RESULTS = 1000
WEB_DIR = Path(__file__).parent / "web"
IMAGE_CACHE = "public, max-age=86400"

WHERE = Query(
    [],
    description="metadata filters as in `simsearch query --where`, e.g. `width>=1024` or "
    "`camera=X100`; repeat for several (all must hold)",
)


# --- the application ----------------------------------------------------------------------


def create_app(
    engine: Engine,
    *,
    fingerprint: str,
    auto: bool = False,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    thumbnail_dir: Path | None = None,
    on_database_lost: Callable[[], None] | None = None,
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="simsearch",
        version=__version__,
        description="Similar-image search on PostgreSQL + pgvector.",
        lifespan=lifespan,
    )
    app.state.last_request = time.monotonic()
    app.state.requests = 0
    thumbs = thumbnail_dir or config.home() / "thumbnails"

    @app.exception_handler(SimsearchError)
    async def simsearch_error(request: Request, exc: SimsearchError) -> JSONResponse:
        return _error(_status(exc), str(exc))

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> JSONResponse:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, psycopg.OperationalError) and on_database_lost is not None:
            on_database_lost()  # e.g. the embedded server was stopped: its new port is not ours
        return _error(503, f"database: {database.redact(first)}")

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Whether the server answers, and for what: version, pid, database, fingerprint."""
        return {
            "status": "ok",
            "version": __version__,
            "pid": os.getpid(),
            "database": database.describe(),
            "fingerprint": fingerprint,
            "auto": auto,
            "requests": app.state.requests,
        }

    @app.get("/feature-sets")
    def feature_sets() -> list[dict[str, Any]]:
        """Each feature set: name, dimension, model, rows, whether an ANN index serves it."""
        return engine.feature_sets()

    @app.post("/search")
    def search(
        response: Response,
        image: UploadFile = File(..., description="the query photo"),  # noqa: B008
        n: int = Query(10, ge=1, le=MAX_RESULTS),
        feature_set: str | None = None,
        exact: bool = False,
        ef: int = Query(DEFAULT_EF_SEARCH, ge=1, le=10_000),
        where: list[str] = WHERE,
    ) -> dict[str, Any]:
        """The stored images nearest to an uploaded photo (multipart field ``image``).

        The Server-Timing header gives milliseconds per phase: prepare, decode, queue (waiting
        for the model), embed, knn, describe.
        """
        data = image.file.read()
        timings: dict[str, float] = {}
        fs, matches = engine.search_upload(
            data, image.filename or "", n, feature_set, exact, ef, where, timings
        )
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
        n: int = Query(10, ge=1, le=MAX_RESULTS),
        feature_set: str | None = None,
        exact: bool = False,
        ef: int = Query(DEFAULT_EF_SEARCH, ge=1, le=10_000),
        where: list[str] = WHERE,
    ) -> dict[str, Any]:
        """The stored images nearest to a stored one (itself first, at distance 0)."""
        fs, matches = engine.similar(object_id, n, feature_set, exact, ef, where)
        return _answer(fs.name, engine.describe(matches))

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
        results = await asyncio.to_thread(engine.cli_query, body)
        return JSONResponse(
            {
                "matches": [
                    [{"object_id": m.object_id, "distance": m.distance} for m in r] for r in results
                ]
            }
        )

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return UploadLimit(app, max_upload)  # type: ignore[return-value]


def _answer(feature_set: str, results: list[Result]) -> dict[str, Any]:
    return {"feature_set": feature_set, "results": [r.to_json() for r in results]}


def _status(exc: SimsearchError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ImageTooLarge):
        return 422
    if isinstance(exc, DatabaseError):
        return 503
    if isinstance(exc, InputError):
        return 422
    return 400  # a feature set to choose, and the like: the request must say more


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _over_unix_socket(request: Request) -> bool:
    # uvicorn reports a Unix socket's server address as (path, None), a TCP one as (host, port).
    server = request.scope.get("server")
    return server is not None and server[1] is None


class UploadLimit:
    """Count requests (for /health and the idle timeout) and refuse request bodies over
    ``limit`` bytes with 413, before they are read or spooled.

    The declared Content-Length is checked first; a body sent without one (chunked) is counted
    as it arrives and cut off at the limit. Plain ASGI: Starlette's @middleware("http") would
    cost every request a task group and a memory stream.
    """

    def __init__(self, app: FastAPI, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # app.state, app.openapi(), ... for callers and tests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.app.state.last_request = time.monotonic()
            self.app.state.requests += 1
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


# --- the process ----------------------------------------------------------------------------


class _Stopped(Exception):
    """SIGINT or SIGTERM, after uvicorn has finished the requests in flight."""


def serve(
    host: str = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    socket_path: Path | None = None,
    *,
    auto: bool = False,
    idle_timeout: float | None = None,
    image_roots: list[Path] | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    announce: Callable[[str], None] = print,
) -> int:
    """Run the server until SIGINT, SIGTERM or ``idle_timeout`` seconds without a request."""
    import uvicorn

    p = daemon.paths()
    final_socket = socket_path or p.socket
    pid_file = daemon.PidFile(p)
    if not daemon.socket_usable(final_socket):
        raise daemon.ServerError(f"{final_socket}: too long for a Unix socket path; use --socket")
    pid_file.acquire({"socket": str(final_socket), "ready": False})
    sockets: list[socket.socket] = []
    staging = final_socket.with_name(f".{final_socket.name}.{os.getpid()}")
    try:
        # We hold the pid file's lock, so a socket here is a dead server's: ours replaces it.
        if final_socket.is_symlink() or (
            final_socket.exists() and not stat.S_ISSOCK(final_socket.stat().st_mode)
        ):
            raise daemon.ServerError(f"{final_socket}: exists and is not a socket; remove it")
        url = None
        if port is not None:
            sockets.append(_tcp_socket(host, port))
            bound_host, bound_port = sockets[-1].getsockname()[:2]
            url = f"http://{_url_host(bound_host)}:{bound_port}/"
        sockets.append(_unix_socket(staging))
        engine = Engine(image_roots=image_roots, max_pixels=max_pixels)
        engine.open()
        fingerprint = daemon.fingerprint()
        holder: dict[str, Any] = {}

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            os.replace(staging, final_socket)  # now clients can find us: we are warm
            pid_file.update({"socket": str(final_socket), "url": url, "auto": auto, "ready": True})
            announce(
                f"simsearch server {__version__} (pid {os.getpid()}) for {database.describe()}: "
                + (f"{url} and " if url else "")
                + f"socket {final_socket}"
            )
            watcher = asyncio.create_task(_watch(app, holder, idle_timeout, final_socket))
            try:
                yield
            finally:
                watcher.cancel()
                with contextlib.suppress(OSError):
                    final_socket.unlink()

        app = create_app(
            engine,
            fingerprint=fingerprint,
            auto=auto,
            max_upload=max_upload,
            lifespan=lifespan,
            # A server started on demand makes way; the next query starts a fresh one.
            on_database_lost=(lambda: setattr(holder["server"], "should_exit", True))
            if auto
            else None,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                lifespan="on",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=10,
            )
        )
        holder["server"] = server
        previous = {
            sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            server.run(sockets=sockets)
        except _Stopped:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            engine.close()
        announce("simsearch server stopped")
        return 0
    finally:
        for sock in sockets:
            sock.close()
        with contextlib.suppress(OSError):
            staging.unlink()
        pid_file.release()


async def _watch(app: Any, holder: dict[str, Any], idle_timeout: float | None, sock: Path) -> None:
    """Stop when idle too long, or when our socket is gone (SIMSEARCH_HOME removed, say):
    nobody can reach us any more, and a server nobody can reach must not linger."""
    while True:
        await asyncio.sleep(min(10.0, idle_timeout / 4) if idle_timeout else 10.0)
        reason = None
        if idle_timeout and time.monotonic() - app.state.last_request > idle_timeout:
            reason = f"no request for {idle_timeout:.0f} s"
        elif not sock.exists():
            reason = f"{sock} is gone"
        if reason:
            print(f"simsearch server: {reason}; stopping", file=sys.stderr, flush=True)
            holder["server"].should_exit = True
            return


def _raise_stopped(signum: int, frame: Any) -> None:
    raise _Stopped


def _tcp_socket(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, proto, _, address = infos[0]
        # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only then, and
        # without it keep-alive responses wait 40 ms for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise daemon.ServerError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _unix_socket(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # born 0600: no moment when another user could connect
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise daemon.ServerError(
            f"cannot create the socket {path} ({exc.strerror or exc})"
        ) from None
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
