"""Crashes for real: `kill -9` of an ingest mid-shard, and of the embedded server between commands.

After an ingest is killed the database must hold exactly the shards its ledger records, each
whole; re-running must finish the rest and end equal to a clean ingest. A killed server, or lock
files it left behind, must cost the next command nothing but a restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from simsearch.db import connect, embedded

APP = (
    "simsearch-crash-test"  # the killed ingest's application_name, to watch it in pg_stat_activity
)
SHARDS, ROWS, DIM = 5, 10_000, 64


@pytest.fixture()
def big_dir(tmp_path: Path) -> Path:
    """Shards large enough that a kill can land in the middle of one shard's COPY."""
    folder = tmp_path / "big"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for shard in range(SHARDS):
        ids = np.array([f"{shard:02d}-{rng.bytes(8).hex()}.jpg" for _ in range(ROWS)])
        np.save(folder / f"{shard:04d}.object_ids.npy", ids)
        np.save(folder / f"{shard:04d}.features.npy", rng.standard_normal((ROWS, DIM), np.float32))
    return folder


def per_shard(feature_set: str) -> dict[str, tuple[int, int, str]]:
    """shard name -> (rows in the ledger, rows stored, checksum over its ids and vectors)."""
    with connect.connect() as conn:
        rows = conn.execute(
            """SELECT s.name, s.rows, count(e.object_id), coalesce(
                        sum(hashtextextended(e.object_id || e.embedding::text, 0)::numeric), 0)
               FROM shards s JOIN feature_sets f ON f.id = s.feature_set_id
               LEFT JOIN embeddings e ON e.shard_id = s.id
               WHERE f.name = %s GROUP BY s.name, s.rows ORDER BY s.name""",
            [feature_set],
        ).fetchall()
        orphans = conn.execute(
            """SELECT count(*) FROM embeddings e JOIN feature_sets f ON f.id = e.feature_set_id
               WHERE f.name = %s AND e.shard_id NOT IN (SELECT id FROM shards)""",
            [feature_set],
        ).fetchone()[0]
    assert orphans == 0, "rows stored outside any shard the ledger records"
    return {name: (ledger, stored, str(digest)) for name, ledger, stored, digest in rows}


def watch(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll ``predicate(conn)`` until it holds (True) or the process ends first (False)."""
    with connect.connect() as conn:
        conn.autocommit = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(conn):
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.003)
    raise AssertionError("the ingest neither reached the kill point nor finished")


def copying(conn) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active' "
        "AND query LIKE 'COPY embeddings%%'",
        [APP],
    ).fetchone()
    return bool(row[0])


def ledger_reaches(count: int):
    def reached(conn) -> bool:
        row = conn.execute(
            "SELECT count(*) FROM shards s JOIN feature_sets f ON f.id = s.feature_set_id "
            "WHERE f.name = 'crashy'"
        ).fetchone()
        return row[0] >= count

    return reached


def wait_for_backend_to_end() -> None:
    """The killed client's backend rolls back once it sees the socket close; wait for that."""
    with connect.connect() as conn:
        conn.autocommit = True
        for _ in range(2000):
            if not conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP]
            ).fetchone()[0]:
                return
            time.sleep(0.005)
    raise AssertionError("the killed ingest's backend is still there")


def start_ingest(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PGAPPNAME": APP}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simsearch",
            "ingest",
            str(folder),
            "--feature-set",
            "crashy",
            "--no-index",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_mid_ingest_then_rerun_equals_clean_ingest(cli, empty_db, big_dir):
    clean = cli("ingest", big_dir, "--feature-set", "clean", "--no-index")
    assert clean.code == 0, clean.err
    reference = per_shard("clean")
    assert len(reference) == SHARDS

    # Kill points: inside a COPY (first shard, then a later one), right after a shard commits.
    kill_points = [("mid-COPY", copying), ("mid-COPY", copying), ("after a commit", None)]
    kills_mid_copy = 0
    for what, predicate in kill_points:
        before = len(per_shard("crashy"))
        proc = start_ingest(big_dir)
        if predicate is None:
            predicate = ledger_reaches(before + 1)
        else:  # let one shard land first, so the kill is not always in the first shard's COPY
            watch(ledger_reaches(before + (1 if kills_mid_copy else 0)), proc)
        landed = watch(predicate, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for_backend_to_end()
        if landed and what == "mid-COPY":
            kills_mid_copy += 1
        state = per_shard("crashy")
        for name, (ledger_rows, stored_rows, digest) in state.items():
            # Every shard the ledger names is there whole, exactly as a clean load stores it.
            assert (ledger_rows, stored_rows, digest) == reference[name], (what, name)
        assert len(state) < SHARDS, f"the ingest finished before the kill {what}"
    assert kills_mid_copy >= 2, "no kill landed inside a COPY: make the shards larger"

    rerun = start_ingest(big_dir)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "skipped" in out
    assert per_shard("crashy") == reference


# -- the embedded server -------------------------------------------------------------------------


@contextlib.contextmanager
def own_home(prefix: str) -> Iterator[Path]:
    """A SIMSEARCH_HOME of its own, so killing its server spares the session's.

    Made outside pytest's temporary root: a pytest session starting meanwhile resets that root
    to 0700, and the embedded server's own user could then not reach a data directory in it.
    """
    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SIMSEARCH_HOME", str(home))
            yield home
            embedded.stop(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def private_home() -> Iterator[Path]:
    with own_home("ss-crash-") as home:
        yield home


def postmaster_pid(home: Path) -> int:
    return int((embedded.pgdata(home) / "postmaster.pid").read_text().splitlines()[0])


def kill_postmaster(home: Path) -> int:
    pid = postmaster_pid(home)
    assert b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    os.kill(pid, signal.SIGKILL)
    for _ in range(400):  # gone, or a zombie that nobody reaps (a container's bare init)
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                break
        except OSError:
            break
        time.sleep(0.005)
    return pid


def query_ok(cli, image: Path) -> bool:
    result = cli("query", image, "-n", "1", "--feature-set", "small")
    return result.code == 0 and result.lines[0] == f"{image.name} 0.0"


def test_server_killed_between_commands(cli, private_home, tmp_path, gallery, origin_model):
    from data import write_shards

    from simsearch.model import load_model

    ids = [p.name for p in gallery]
    shards = write_shards(
        tmp_path / "small", ids, load_model(str(origin_model)).embed_files(gallery)
    )
    assert cli("ingest", shards, "--model", origin_model).code == 0
    old = kill_postmaster(private_home)
    # In this process (as a long-lived `simsearch serve` would be) ...
    assert query_ok(cli, gallery[0]), "no recovery in-process"
    assert postmaster_pid(private_home) != old
    # ... and in a fresh command.
    kill_postmaster(private_home)
    done = subprocess.run(
        [sys.executable, "-m", "simsearch", "db", "status"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "feature set small: 40 rows" in done.stdout


def test_stale_lock_files_are_cleared(cli, private_home, tmp_path):
    """postmaster.pid naming a dead pid or someone else's, and a cut-short .handle_pids.json."""
    assert cli("db", "status").code == 0
    data = embedded.pgdata(private_home)
    lines = (data / "postmaster.pid").read_text().splitlines()
    socket_lock = Path(lines[4]) / f".s.PGSQL.{lines[3]}.lock"
    saved = {path: path.read_text() for path in (data / "postmaster.pid", socket_lock)}
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        for pid in (postmaster_pid(private_home), stranger.pid):
            assert cli("db", "stop").code == 0
            for path, text in saved.items():  # as a crash leaves them, naming ``pid``
                path.write_text(text.replace(text.splitlines()[0], str(pid), 1))
            (data / ".handle_pids.json").write_text("[12, 3")
            result = cli("db", "status")
            assert result.code == 0, result.err
            assert postmaster_pid(private_home) not in (pid, stranger.pid)
            saved = {
                data / "postmaster.pid": (data / "postmaster.pid").read_text(),
                socket_lock: socket_lock.read_text(),
            }
    finally:
        stranger.kill()
        stranger.wait()
    # Clearing stale files leaves a running server and its lock files alone.
    pid = postmaster_pid(private_home)
    before = (data / "postmaster.pid").read_text()
    embedded._clear_stale_state(data)
    assert (data / "postmaster.pid").read_text() == before
    assert cli("db", "status").code == 0 and postmaster_pid(private_home) == pid
