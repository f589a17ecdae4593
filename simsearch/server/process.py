"""The resident ``simsearch serve`` process: where it lives, starting it, stopping it.

Standard library only: the thin ``simsearch query`` client imports this, and its whole point is
to start fast (numpy, psycopg and onnxruntime cost about 0.7 s to import).

One server per configuration: its Unix socket, pid file and log live in ``SIMSEARCH_HOME/run``
under a name derived from the database URL, so a client only ever reaches a server that answers
for the same database. The pid file is held under an exclusive ``flock`` for the server's whole
life: a second server refuses to start, and whether a server is alive is a lock probe, not a
guess from a pid that may have been reused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import sys
import time
from collections import namedtuple
from pathlib import Path

from .. import __version__, config
from ..errors import ServerError

TYPE_CHECKING = False  # typing costs an import that the thin client does not need
if TYPE_CHECKING:
    from typing import IO, Any

# Auto-started servers end themselves after this long without a request.
AUTO_IDLE_TIMEOUT = 1800.0
# How long a client waits for a server it started before searching in-process instead.
START_TIMEOUT = 30.0
# After a failed start, clients search in-process for this long instead of retrying each time.
RETRY_AFTER_FAILURE = 300.0
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, with the terminating NUL


# run_dir, socket, pid_file, log, start_lock, failed: all Paths. (No dataclass: its import
# pulls in inspect, a few milliseconds the thin client has no use for.)
Paths = namedtuple("Paths", ["run_dir", "socket", "pid_file", "log", "start_lock", "failed"])


def paths() -> Paths:
    """Where the server for the current configuration keeps its socket, pid file and log."""
    run_dir = config.home() / "run"
    key = hashlib.sha256((config.database_url() or "embedded").encode()).hexdigest()[:12]
    stem = run_dir / f"server-{key}"
    return Paths(
        run_dir=run_dir,
        socket=stem.with_suffix(".sock"),
        pid_file=stem.with_suffix(".pid"),
        log=stem.with_suffix(".log"),
        start_lock=stem.with_suffix(".lock"),
        failed=stem.with_suffix(".failed"),
    )


def fingerprint() -> str:
    """What a server's answers depend on besides the database's contents.

    The code (simsearch's own files and migrations: a new version may read the schema
    differently or migrate it) and the default model named in the environment. Feature sets
    and their models are read from the database on every request, and model files are
    checked for changes by the server, so neither needs to be here. The read replicas too: a
    server started with others searches elsewhere. Costs about a millisecond.
    """
    replicas = ",".join(config.replica_urls())
    digest = hashlib.sha256(f"{__version__}\0{config.model_path() or ''}\0{replicas}".encode())
    package = Path(__file__).parent.parent
    # Editable installs put migrations beside the package; installed ones inside it.
    roots = [
        package,
        package / "db",
        package / "server",
        package / "migrations" / "versions",
        package.parent / "migrations" / "versions",
    ]
    for root in roots:
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(root), key=lambda e: e.name):
                if entry.name.endswith(".py") and entry.is_file():
                    st = entry.stat()
                    digest.update(f"{entry.path}\0{st.st_mtime_ns}\0{st.st_size}\0".encode())
    return digest.hexdigest()[:16]


def ensure_run_dir(p: Paths) -> None:
    p.run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(p.run_dir, 0o700)  # the socket answers whoever can reach it: keep it private


def socket_usable(path: Path) -> bool:
    return len(os.fsencode(path)) <= _MAX_SOCKET_PATH


# --- the server's side -----------------------------------------------------------------------


class PidFile:
    """The server's pid file, held under an exclusive lock while the server lives."""

    def __init__(self, p: Paths) -> None:
        self._paths = p
        self._handle: IO[str] | None = None

    def acquire(self, info: dict[str, Any]) -> None:
        ensure_run_dir(self._paths)
        handle = open(self._paths.pid_file, "a+")  # noqa: SIM115 - held open for the server's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            other = _parse(handle.read())
            handle.close()
            pid = other.get("pid", "?")
            raise ServerError(
                f"a simsearch server (pid {pid}) already answers for this database; "
                "`simsearch stop` ends it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), **info}) + "\n")
        handle.flush()
        self._handle = handle

    def update(self, info: dict[str, Any]) -> None:
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps({"pid": os.getpid(), **info}) + "\n")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            self._paths.pid_file.unlink()
        self._handle.close()  # closing drops the lock
        self._handle = None


def _parse(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# --- anyone's side -------------------------------------------------------------------------


def running(p: Paths | None = None) -> dict[str, Any] | None:
    """The live server's pid file contents (pid, socket, url, ...), or None when none runs."""
    p = p or paths()
    try:
        handle = open(p.pid_file)  # noqa: SIM115
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _parse(handle.read()) or {"pid": None}  # locked: a server holds it
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None  # nobody holds the lock: a file left by a killed server


def stop(p: Paths | None = None, timeout: float = 15.0) -> int | None:
    """End the server for the current configuration; its pid, or None if none was running."""
    p = p or paths()
    info = running(p)
    if info is None:
        return None
    pid = info.get("pid")
    if not isinstance(pid, int):
        raise ServerError(f"{p.pid_file}: a server holds it but it names no pid")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running(p) is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            break
        time.sleep(0.02)
    with contextlib.suppress(OSError):
        p.socket.unlink()  # a killed server leaves it behind
    return pid


def start_background(args: list[str], p: Paths | None = None, wait: float = START_TIMEOUT) -> int:
    """Start ``simsearch serve ARGS`` detached from this process; its pid once it answers.

    Raises ServerError, naming the log, when it exits or does not answer within ``wait``.
    """
    import subprocess

    p = p or paths()
    ensure_run_dir(p)
    with open(p.log, "ab") as log:
        log.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: serve {' '.join(args)}\n".encode()
        )
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "simsearch", "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not ended by the terminal's Ctrl-C or hang-up
            close_fds=True,
        )
    deadline = time.monotonic() + wait
    while True:
        code = process.poll()
        if code is not None:
            raise ServerError(f"the simsearch server exited at start (code {code}); see {p.log}")
        info = running(p)
        if info is not None and info.get("pid") == process.pid and info.get("ready"):
            return process.pid  # it marks itself ready once its socket is in place
        if time.monotonic() > deadline:
            raise ServerError(
                f"the simsearch server did not answer within {wait:.0f} s; see {p.log}"
            )
        time.sleep(0.02)


@contextlib.contextmanager
def start_lock(p: Paths):  # type: ignore[no-untyped-def]
    """Serialise clients that would start a server at the same moment."""
    ensure_run_dir(p)
    with open(p.start_lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def note_failure(p: Paths) -> None:
    with contextlib.suppress(OSError):
        p.failed.write_text(f"{time.time()}\n")


def failed_recently(p: Paths) -> bool:
    try:
        return bool(time.time() - p.failed.stat().st_mtime < RETRY_AFTER_FAILURE)
    except OSError:
        return False


def clear_failure(p: Paths) -> None:
    with contextlib.suppress(OSError):
        p.failed.unlink()


def is_connection_error(exc: BaseException) -> bool:
    """Nobody listens on the socket (missing, refused, reset): start a server or work alone."""
    if isinstance(exc, (FileNotFoundError, ConnectionError)):
        return True
    return isinstance(exc, OSError) and exc.errno in (
        errno.ENOENT,
        errno.ECONNREFUSED,
        errno.ENOTSOCK,
    )
