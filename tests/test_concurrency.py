"""Concurrent use: queries during an ingest, two ingests of one directory, many query processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from data import write_shards
from test_crash import own_home

from simsearch.db import connect, embedded

SHARDS, ROWS, DIM = 6, 4_000, 64  # 24,000 rows: ingest builds the index


def clustered_dir(folder: Path) -> tuple[Path, np.ndarray]:
    """Shards whose rows all lie within 0.01 of their shard's own centre, centres far apart.

    An exact query at a centre then counts how many of that shard's rows are visible.
    """
    folder.mkdir()
    rng = np.random.default_rng(21)
    centres = rng.standard_normal((SHARDS, DIM)).astype(np.float32) * 10
    for shard in range(SHARDS):
        ids = np.array([f"{shard}-{row}.jpg" for row in range(ROWS)])
        noise = rng.uniform(-1, 1, (ROWS, DIM)).astype(np.float32) * (0.01 / np.sqrt(DIM))
        np.save(folder / f"{shard:04d}.object_ids.npy", ids)
        np.save(folder / f"{shard:04d}.features.npy", centres[shard] + noise)
    return folder, centres


def ingest_process(folder: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "simsearch", "ingest", str(folder), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_queries_during_ingest_see_whole_shards(cli, empty_db, tmp_path):
    from simsearch.db import feature_sets, knn

    folder, centres = clustered_dir(tmp_path / "live")
    first = tmp_path / "first" / "live"
    first.mkdir(parents=True)
    for path in folder.glob("0000.*"):
        shutil.copy(path, first / path.name)
    assert cli("ingest", first, "--no-index").code == 0  # the feature set exists before the race

    # One autocommit connection: every query sees what is committed at that moment, and a
    # sweep over the shards takes milliseconds, not a connection per query, so sweeps fall
    # inside the load however fast it runs.
    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, "live")
        proc = ingest_process(folder, "--no-index")
        seen: set[int] = set()  # how many shards were visible at once, over the run
        queries = 0
        while True:
            running = proc.poll() is None
            visible = 0
            for shard, centre in enumerate(centres):
                matches = knn.knn(conn, fs, centre, ROWS + 1, exact=True)
                near = sum(m.distance < 0.1 for m in matches)
                assert near in (0, ROWS), f"shard {shard}: {near} of {ROWS} rows visible"
                assert all(m.object_id.startswith(f"{shard}-") for m in matches[:near])
                visible += near == ROWS
                queries += 1
            seen.add(visible)
            if not running:
                break
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert max(seen) == SHARDS
    assert len(seen - {1, SHARDS}) >= 1, f"no query ran mid-ingest ({queries} queries, saw {seen})"


def test_two_ingests_of_one_directory_never_duplicate(empty_db, tmp_path):
    folder, _ = clustered_dir(tmp_path / "twice")
    procs = [ingest_process(folder), ingest_process(folder)]
    results = [p.communicate(timeout=300) for p in procs]
    loaded = 0
    for proc, (out, err) in zip(procs, results, strict=True):
        # Both succeed (one waits, then skips what the other loaded) or one fails in one line.
        if proc.returncode == 0:
            loaded += int(out.split("loaded ")[1].split(" shard")[0])
        else:
            assert err.count("error: ") == 1 and "Traceback" not in err, err
    assert loaded == SHARDS, results  # every shard loaded exactly once between the two
    with connect.connect() as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT object_id) FROM embeddings"
        ).fetchone()
        ledger = conn.execute("SELECT name, count(*) FROM shards GROUP BY name").fetchall()
    assert rows == distinct == SHARDS * ROWS
    assert sorted(ledger) == [(f"{s:04d}", 1) for s in range(SHARDS)]


QUERIES = 50
PROCESSES = 8

_QUERY_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from simsearch.db import connect
    from simsearch.search import query_on
    images = [Path(p) for p in sys.argv[1:]]
    with connect.connect() as conn:  # each process its own connection, as a server would hold
        for i in range({queries}):
            image = images[i % len(images)]
            # What `simsearch query IMAGE -n 3` does once connected: embed with the stored
            # model and preprocessing, then search.
            (matches,) = query_on(conn, [image], n=3)
            if matches[0].object_id != image.name or matches[0].distance > 1e-6:
                print(f"query {{i}} of {{image}}: {{matches}}")
                sys.exit(1)
    print("ok")
    """
).format(queries=QUERIES)


@pytest.fixture()
def private_home() -> Iterator[Path]:
    with own_home("ss-busy-") as home:
        yield home


def test_many_query_processes_at_once(cli, private_home, tmp_path, gallery, origin_model):
    """8 processes x 50 queries, each embedding its image and searching, all at once.

    The embedded server is stopped first, so the processes also race to start it.
    """
    from simsearch.model import load_model

    features = load_model(str(origin_model)).embed_files(gallery)
    shards = write_shards(tmp_path / "busy", [p.name for p in gallery], features, sizes=[10])
    assert cli("ingest", shards, "--model", origin_model).code == 0
    assert cli("db", "stop").code == 0 and not embedded.is_running(private_home)

    images = [str(p) for p in gallery]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _QUERY_SCRIPT, *images[k::PROCESSES]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for k in range(PROCESSES)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", (out, err)
    assert embedded.is_running(private_home)
