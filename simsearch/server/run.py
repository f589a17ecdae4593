"""Running ``simsearch serve``: claim the pid file, listen, warm up, serve until told to stop.

The Unix socket is bound under a temporary name and renamed into place once the models are warm,
so a client that sees the socket finds a server ready to answer. SIGINT and SIGTERM end requests
in flight, close the pool and remove the socket and pid file. uvicorn is imported here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from .. import __version__, config
from ..db import connect
from ..errors import ServerError
from . import process
from .app import Traffic, create_app
from .engine import Engine


class _Stopped(Exception):
    """SIGINT or SIGTERM, after uvicorn has finished the requests in flight."""


class _Stopper:
    """Asks the uvicorn server, once it exists, to finish: idle, socket gone, database lost."""

    def __init__(self) -> None:
        self.server: Any = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True


def serve(
    host: str = config.HOST,
    port: int | None = config.PORT,
    socket_path: Path | None = None,
    *,
    auto: bool = False,
    idle_timeout: float | None = None,
    image_roots: list[Path] | None = None,
    max_upload: int = config.MAX_UPLOAD_MB * 2**20,
    max_pixels: int = config.MAX_PIXELS,
    announce: Callable[[str], None] = print,
) -> int:
    """Run the server until SIGINT, SIGTERM or ``idle_timeout`` seconds without a request."""
    p = process.paths()
    final_socket = socket_path or p.socket
    pid_file = _claim(p, final_socket, auto, announce)
    sockets: list[socket.socket] = []
    staging = final_socket.with_name(f".{final_socket.name}.{os.getpid()}")
    try:
        url = None
        if port is not None:
            sockets.append(_tcp_socket(host, port))
            bound_host, bound_port = sockets[-1].getsockname()[:2]
            url = f"http://{_url_host(bound_host)}:{bound_port}/"
        sockets.append(_unix_socket(staging))
        engine = Engine(image_roots=image_roots, max_pixels=max_pixels)
        engine.open()
        stopper = _Stopper()

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            os.replace(staging, final_socket)  # now clients can find us: we are warm
            pid_file.update({"socket": str(final_socket), "url": url, "auto": auto, "ready": True})
            announce(
                f"simsearch server {__version__} (pid {os.getpid()}) for {connect.describe()}: "
                + (f"{url} and " if url else "")
                + f"socket {final_socket}"
            )
            traffic = app.state.traffic
            watcher = asyncio.create_task(_watch(traffic, stopper, idle_timeout, final_socket))
            try:
                yield
            finally:
                watcher.cancel()
                with contextlib.suppress(OSError):
                    final_socket.unlink()

        app = create_app(
            engine,
            fingerprint=process.fingerprint(),
            auto=auto,
            max_upload=max_upload,
            lifespan=lifespan,
            # A server started on demand makes way; the next query starts a fresh one.
            on_database_lost=stopper.stop if auto else None,
        )
        try:
            _run(app, sockets, stopper)
        finally:
            engine.close()
        announce("simsearch server stopped")
        return 0
    finally:
        for sock in sockets:
            sock.close()
        with contextlib.suppress(OSError):
            staging.unlink()
        pid_file.release()


def _claim(
    p: process.Paths, final_socket: Path, auto: bool, announce: Callable[[str], None]
) -> process.PidFile:
    """The pid file, locked for this process, once the socket's place is known to be usable.

    A server that `simsearch query` started on demand (socket only, idle timeout) makes way for
    a `simsearch serve` the user starts: it is stopped, and this one answers queries instead.
    """
    if not process.socket_usable(final_socket):
        raise ServerError(f"{final_socket}: too long for a Unix socket path; use --socket")
    pid_file = process.PidFile(p)
    for attempt in range(3):  # a query may start another on-demand server in between
        try:
            pid_file.acquire({"socket": str(final_socket), "ready": False})
            break
        except ServerError:
            other = process.running(p)
            if auto or attempt == 2 or (other is not None and not other.get("auto")):
                raise
            if other is None:
                continue  # it ended meanwhile
            process.stop(p)
            announce(
                f"stopped the server `simsearch query` started on demand (pid {other.get('pid')}); "
                "this one answers queries now"
            )
    # We hold the pid file's lock, so a socket here is a dead server's: ours replaces it.
    if final_socket.is_symlink() or (
        final_socket.exists() and not stat.S_ISSOCK(final_socket.stat().st_mode)
    ):
        pid_file.release()
        raise ServerError(f"{final_socket}: exists and is not a socket; remove it")
    return pid_file


def _run(app: FastAPI, sockets: list[socket.socket], stopper: _Stopper) -> None:
    """uvicorn on the bound sockets until a signal or the stopper ends it."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    )
    stopper.server = server
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=sockets)
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _watch(
    traffic: Traffic, stopper: _Stopper, idle_timeout: float | None, sock: Path
) -> None:
    """Stop when idle too long, or when our socket is gone (SIMSEARCH_HOME removed, say):
    nobody can reach us any more, and a server nobody can reach must not linger."""
    while True:
        await asyncio.sleep(min(10.0, idle_timeout / 4) if idle_timeout else 10.0)
        reason = None
        if idle_timeout and time.monotonic() - traffic.last_request > idle_timeout:
            reason = f"no request for {idle_timeout:.0f} s"
        elif not sock.exists():
            reason = f"{sock} is gone"
        if reason:
            print(f"simsearch server: {reason}; stopping", file=sys.stderr, flush=True)
            stopper.stop()
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
        raise ServerError(
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
        raise ServerError(f"cannot create the socket {path} ({exc.strerror or exc})") from None
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
