"""The thin `simsearch query`: a new process that hands its work to the resident server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_server import index_gallery

from simsearch.server import client, process

HEAVY = ("numpy", "psycopg", "onnxruntime", "PIL")


def simsearch(*args: object, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a new process, with the resident server allowed unless env says otherwise."""
    environ = {k: v for k, v in os.environ.items() if k != "SIMSEARCH_NO_DAEMON"}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "simsearch", *map(str, args)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


@pytest.fixture(scope="module")
def photo(gallery: list[Path], origin_model: Path) -> Iterator[Path]:
    index_gallery(gallery, origin_model)
    process.stop()
    yield next(p for p in gallery if p.suffix == ".jpg")
    process.stop()


@pytest.fixture(autouse=True)
def no_failure_marker() -> Iterator[None]:
    process.clear_failure(process.paths())
    yield
    process.clear_failure(process.paths())


def served_requests() -> int:
    health = client.health()
    assert health is not None
    return int(health["requests"])


def test_query_starts_a_server_and_answers_as_in_process(photo: Path) -> None:
    assert process.running() is None
    first = simsearch("query", photo, "-n", "5")
    assert first.returncode == 0, first.stderr
    info = process.running()
    assert info is not None and info["auto"] is True and info["url"] is None  # socket only
    before = served_requests()
    second = simsearch("query", photo, "-n", "5")
    assert served_requests() == before + 2  # the query, and our /health call
    alone = simsearch("query", "--no-daemon", photo, "-n", "5")
    assert first.stdout == second.stdout == alone.stdout
    assert first.stdout.splitlines()[0] == f"{photo.name} 0.0"
    for options in (["--exact"], ["--json"], ["--exact", "--json", "-n", "40"]):
        served = simsearch("query", photo, *options)
        assert served.stdout == simsearch("query", "--no-daemon", photo, *options).stdout


def test_model_options_travel_to_the_server(photo: Path, origin_model: Path) -> None:
    options = ["--model", origin_model, "--mean", "0.1,0.2,0.3", "--std", "0.5,0.5,0.5", "-n", "4"]
    simsearch("query", photo)  # a server runs
    before = served_requests()
    served = simsearch("query", photo, *options)
    assert served.returncode == 0, served.stderr
    assert served_requests() == before + 2  # it answered (and our /health call)
    assert served.stdout == simsearch("query", "--no-daemon", photo, *options).stdout
    assert served.stdout != simsearch("query", "--no-daemon", photo, "-n", "4").stdout


def test_the_thin_client_imports_no_heavy_library(photo: Path) -> None:
    simsearch("query", photo)  # make sure a server runs
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "simsearch", "query", str(photo), "-n", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "SIMSEARCH_NO_DAEMON"},
    )
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == f"{photo.name} 0.0"
    modules = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line
    }
    assert "simsearch.server.client" in modules
    assert not {m for m in modules if m.split(".")[0] in HEAVY}


def test_user_errors_read_the_same_through_the_server(photo: Path, tmp_path: Path) -> None:
    served = simsearch("query", photo, "--feature-set", "nosuch")
    alone = simsearch("query", "--no-daemon", photo, "--feature-set", "nosuch")
    assert served.returncode == alone.returncode == 1
    assert served.stderr == alone.stderr
    assert served.stderr.startswith("error: no feature set named 'nosuch'")
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a photo")
    served = simsearch("query", fake)
    alone = simsearch("query", "--no-daemon", fake)
    assert served.returncode == alone.returncode == 1
    assert served.stderr == alone.stderr and "Traceback" not in served.stderr
    missing = simsearch("query", tmp_path / "missing.jpg")
    assert missing.returncode == 1 and "no such image file" in missing.stderr


def test_a_server_for_other_settings_is_replaced(photo: Path) -> None:
    simsearch("query", photo)
    old = process.running()
    assert old is not None
    changed = simsearch("query", photo, "-n", "3", SIMSEARCH_MODEL="builtin:efficientnet-lite0")
    assert changed.returncode == 0, changed.stderr
    new = process.running()
    assert new is not None and new["pid"] != old["pid"]
    assert changed.stdout == simsearch("query", "--no-daemon", photo, "-n", "3").stdout


def test_stop_ends_the_server(photo: Path) -> None:
    simsearch("query", photo)
    info = process.running()
    assert info is not None
    stopped = simsearch("stop")
    assert stopped.returncode == 0
    assert stopped.stdout.strip() == f"stopped the simsearch server (pid {info['pid']})"
    assert process.running() is None and not process.paths().socket.exists()
    assert simsearch("stop").stdout.strip() == "no simsearch server was running"


def test_no_daemon_environment_starts_nothing(photo: Path) -> None:
    process.stop()
    result = simsearch("query", photo, SIMSEARCH_NO_DAEMON="1")
    assert result.returncode == 0 and result.stdout.splitlines()[0] == f"{photo.name} 0.0"
    assert process.running() is None


def test_falls_back_to_in_process_when_the_server_cannot_start(photo: Path) -> None:
    process.stop()
    p = process.paths()
    p.socket.mkdir(parents=True)  # the socket's place is taken: the server refuses to start
    try:
        result = simsearch("query", photo, "-n", "5")
        assert result.returncode == 0
        assert result.stdout == simsearch("query", "--no-daemon", photo, "-n", "5").stdout
        assert "searching in-process" in result.stderr and "not a socket" in p.log.read_text()
        assert process.running() is None
        # Later queries do not pay for another failed start for a while.
        started = time.monotonic()
        again = simsearch("query", photo, "-n", "5")
        assert again.stdout == result.stdout and again.stderr == ""
        assert time.monotonic() - started < 30
    finally:
        p.socket.rmdir()


def test_a_server_whose_socket_is_gone_stops_itself(photo: Path) -> None:
    simsearch("query", photo)
    info = process.running()
    assert info is not None
    Path(info["socket"]).unlink()  # as when SIMSEARCH_HOME is removed under it
    deadline = time.monotonic() + 40
    while process.running() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.running() is None
    assert "is gone; stopping" in process.paths().log.read_text()
