"""Shared fixtures: one embedded PostgreSQL for the session, real ONNX models, real images."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from clusters import citus, replicas  # noqa: F401  (session fixtures: multi-server topologies)
from data import write_images, write_shards
from onnx_models import build_model


@pytest.fixture(scope="session", autouse=True)
def simsearch_home() -> Iterator[Path]:
    """Every test talks to one embedded server in a private SIMSEARCH_HOME.

    Not under pytest's temporary root: a second pytest run resets that root to 0700, which
    would lock the server's own user (pgserver, when run as root) out of its data directory.
    """
    home = Path(tempfile.mkdtemp(prefix="simsearch-test-"))
    saved = {
        k: os.environ.get(k)
        for k in (
            "SIMSEARCH_HOME",
            "SIMSEARCH_DATABASE_URL",
            "SIMSEARCH_MODEL",
            "SIMSEARCH_NO_DAEMON",
        )
    }
    os.environ["SIMSEARCH_HOME"] = str(home)
    os.environ.pop("SIMSEARCH_DATABASE_URL", None)
    os.environ.pop("SIMSEARCH_MODEL", None)
    # `query` works in-process in tests unless a test asks for the resident server
    # (tests/test_client.py): no test leaves a server process behind by accident.
    os.environ["SIMSEARCH_NO_DAEMON"] = "1"
    yield home
    from simsearch.db import embedded
    from simsearch.server import process

    with contextlib.suppress(Exception):
        process.stop()
    with contextlib.suppress(Exception):
        embedded.stop(home)
    shutil.rmtree(home, ignore_errors=True)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def empty_db(simsearch_home: Path) -> Iterator[None]:
    """A database with the schema and no data (indexes of earlier tests dropped too)."""
    from simsearch.db import connect, feature_sets

    with connect.connect() as conn:
        feature_sets.empty_database(conn)
    yield


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def run_cli(*args: object) -> Result:
    """Run the simsearch CLI in this process, capturing what it prints."""
    from simsearch.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(name="cli")
def cli_fixture() -> object:
    return run_cli


@pytest.fixture(scope="session")
def origin_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The origin's interface: inputs:0 NHWC [N,224,224,3] -> feature_vector [N,64]."""
    return build_model(tmp_path_factory.mktemp("models") / "origin.onnx", dimension=64)


@pytest.fixture(scope="session")
def nchw_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another layout, size and names: pixels NCHW [N,3,96,96] -> embedding [N,32]."""
    return build_model(
        tmp_path_factory.mktemp("models") / "nchw.onnx",
        dimension=32,
        size=96,
        layout="NCHW",
        input_name="pixels",
        output_name="embedding",
        grid=4,
        seed=1,
    )


@pytest.fixture(scope="session")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Forty small real image files (PNG and JPEG) of different sizes."""
    return write_images(tmp_path_factory.mktemp("gallery"), 40, seed=7)


@pytest.fixture()
def feature_dir(tmp_path: Path, gallery: list[Path], origin_model: Path) -> Path:
    """Shards made from the gallery's real features plus random rows: 25 shards, a gap."""
    from simsearch.model import load_model

    features = load_model(str(origin_model)).embed_files(gallery)
    ids = [p.name for p in gallery]
    return write_shards(
        tmp_path / "features",
        ids,
        features,
        extra_rows=3000,
        seed=3,
        sizes=[97, 250, 31, 113] * 6 + [60],
        skip=[9],
    )


def array_close(a: list[float], b: list[float], rel: float = 1e-5) -> bool:
    return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=rel, atol=1e-6))
