"""simsearch's own commands through a real Citus coordinator with two workers.

SIMSEARCH_DATABASE_URL points at the coordinator, as a user would set it; the schema is
distributed on first use (``simsearch.db.citus``) and every command runs unchanged. Answers
are held to the exact NumPy scan, as in tests/test_parity.py. Four shards per distributed table
(chosen through the URL, ``options=-c citus.shard_count=4``) keep index builds and plans quick.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from clusters import CitusCluster
from data import read_all
from test_parity import parse, same_answer

SHARDS = 4
SHARD_COUNT_OPTION = "?options=-c%20citus.shard_count%3D4"

# Everything simsearch's migrations create, so each test starts on a bare coordinator (and
# tests/test_citus.py, which shares the cluster, finds none of it).
_RESET = (
    # Every table in public (citus and vector keep theirs in pg_catalog / as extension members),
    # then every simsearch_* function, whatever the migrations at head create.
    r"""DO $$ DECLARE r record; BEGIN
         FOR r IN SELECT c.relname AS t FROM pg_class c
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                    AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                    WHERE d.objid = c.oid AND d.deptype = 'e')
         LOOP EXECUTE format('DROP TABLE IF EXISTS public.%I CASCADE', r.t); END LOOP;
         FOR r IN SELECT p.oid::regprocedure::text AS f FROM pg_proc p
                  WHERE p.proname LIKE 'simsearch\_%'
         LOOP EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', r.f); END LOOP;
       END $$""",
)


def _reset(cluster: CitusCluster) -> None:
    cluster.coordinator.execute(*_RESET)


@pytest.fixture()
def coordinator(citus: CitusCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[CitusCluster]:
    """simsearch pointed at a bare Citus coordinator with two workers."""
    _reset(citus)
    monkeypatch.setenv("SIMSEARCH_DATABASE_URL", citus.url + SHARD_COUNT_OPTION)
    try:
        yield citus
    finally:
        _reset(citus)


@pytest.fixture()
def query_images(gallery: list[Path]) -> list[Path]:
    return gallery[:3] + gallery[-2:]


def _ingest(cli, feature_dir: Path, origin_model: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("ingest", feature_dir, "--model", origin_model)
    assert result.code == 0, result.err


def _reference(cli, feature_dir: Path, origin_model: Path, image: Path, n: int = 10):  # type: ignore[no-untyped-def]
    return parse(cli("scan", feature_dir, image, "--model", origin_model, "-n", n).lines)


def _rows_per_worker(cluster: CitusCluster, table: str = "embeddings") -> dict[int, int]:
    """Rows stored in each worker's shards of ``table``, counted on the workers themselves."""
    with psycopg.connect(cluster.url) as conn:
        placements = conn.execute(
            "SELECT nodeport, shard_name FROM citus_shards WHERE table_name = %s::regclass",
            (table,),
        ).fetchall()
    counts = {w.port: 0 for w in cluster.workers}
    for worker in cluster.workers:
        with psycopg.connect(worker.url) as conn:
            for port, shard in placements:
                if port == worker.port:
                    row = conn.execute(f'SELECT count(*) FROM "{shard}"').fetchone()  # type: ignore[arg-type]
                    counts[port] += int(row[0]) if row else 0
    return counts


def test_first_use_distributes_and_status_names_the_cluster(
    cli, coordinator: CitusCluster, feature_dir: Path, origin_model: Path
) -> None:
    _ingest(cli, feature_dir, origin_model)
    with psycopg.connect(coordinator.url) as conn:
        kinds = dict(
            conn.execute(
                "SELECT table_name::text, citus_table_type || ':' || shard_count FROM citus_tables"
            ).fetchall()
        )
        fks = conn.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f' "
            "AND conrelid IN ('embeddings'::regclass, 'shards'::regclass) ORDER BY 1"
        ).fetchall()
    # simsearch's other tables (projections, duplicate groups...) stay on the coordinator
    # ("local": Citus tracks those that refer to a reference table).
    assert {table: kind for table, kind in kinds.items() if not kind.startswith("local")} == {
        "feature_sets": "reference:1",
        "shards": "reference:1",
        "images": f"distributed:{SHARDS}",
        "embeddings": f"distributed:{SHARDS}",
    }
    assert [f[0] for f in fks] == [
        "embeddings_feature_set_id_fkey",
        "embeddings_object_id_fkey",
        "embeddings_shard_id_fkey",
        "shards_feature_set_id_fkey",
    ]
    status = cli("db", "status")
    assert status.code == 0, status.err
    assert "engine: Citus 14." in status.out
    workers = ", ".join(
        f"127.0.0.1:{w.port}" for w in sorted(coordinator.workers, key=lambda w: w.port)
    )
    assert f"citus workers: 2 ({workers}); tables distributed, {SHARDS} shards" in status.out
    # Rows land on both workers, all of them, none left on the coordinator.
    ids, _ = read_all(feature_dir)
    per_worker = _rows_per_worker(coordinator)
    assert sum(per_worker.values()) == len(ids) and min(per_worker.values()) > 0
    assert sum(_rows_per_worker(coordinator, "images").values()) == len(ids)
    again = cli("db", "distribute")
    assert again.code == 0, again.err
    assert again.out.startswith("nothing to do: the tables are already distributed")


def test_seed_parity_exact_default_and_indexed(
    cli, coordinator: CitusCluster, feature_dir: Path, origin_model: Path, query_images: list[Path]
) -> None:
    """`query --exact` and default `query` equal the NumPy reference, before and after the
    HNSW index is built on every shard."""
    _ingest(cli, feature_dir, origin_model)
    references = {p: _reference(cli, feature_dir, origin_model, p) for p in query_images}
    for image in query_images:
        for extra in (["--exact"], []):
            result = cli("query", image, *extra)
            assert result.code == 0, result.err
            same_answer(parse(result.lines), references[image])
    built = cli("index-build")
    assert built.code == 0, built.err
    assert "index hnsw m=16" in cli("db", "status").out
    for worker in coordinator.workers:
        with psycopg.connect(worker.url) as conn:
            conn.execute("SET citus.override_table_visibility = off")
            found = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relkind = 'i' "
                "AND relname LIKE 'embeddings_hnsw_1_%'"
            ).fetchone()
        assert found is not None and found[0] == SHARDS // 2  # two shards on each worker
    for image in query_images:
        same_answer(parse(cli("query", image).lines), references[image])
        same_answer(parse(cli("query", image, "-n", "3").lines), references[image][:3])
    # A stored image finds itself first, at distance zero.
    assert parse(cli("query", query_images[0]).lines)[0] == (query_images[0].name, 0.0)


def test_ef_search_reaches_every_shard(
    cli, coordinator: CitusCluster, feature_dir: Path, origin_model: Path
) -> None:
    """The recall knob is set with SET LOCAL, so the workers' HNSW scans use it (with
    set_config they stayed at pgvector's 40), and each shard returns the whole candidate
    pool for the coordinator's re-rank."""
    from simsearch.db import connect, feature_sets, knn

    _ingest(cli, feature_dir, origin_model)
    assert cli("index-build").code == 0
    seen = """SELECT DISTINCT inet_server_port(), current_setting('hnsw.ef_search')
              FROM embeddings"""
    ids, features = read_all(feature_dir)
    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, None)
        with conn.transaction():  # knn's own transaction becomes a savepoint of this one
            found = knn.knn(conn, fs, features[0], 10, ef_search=123)
            settings = conn.execute(seen).fetchall()
        assert {s for _, s in settings} == {"123"}
        assert {p for p, _ in settings} == {w.port for w in coordinator.workers}
        assert found[0].object_id == ids[0]
        # Candidates: the coordinator merges each shard's best; LIMIT pool reaches the shards.
        with conn.transaction():
            conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
            conn.execute("SET LOCAL hnsw.ef_search = 7")
            few = knn.knn(conn, fs, features[0], 50, ef_search=7, candidates=100)
        assert len(few) == 50  # ef is raised to n: 50 per shard, not 7
        # simsearch_knn (migration 0007) sets its own settings the same way: with a filter
        # every shard keeps walking its graph (iterative scan) and the index answers without
        # falling back to an exact scan.
        conn.execute("SET simsearch.explain = on")
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        with conn.transaction():
            conn.execute("SET LOCAL simsearch.exact_below = 0")
            rows = conn.execute(
                "SELECT * FROM simsearch_knn(%s, %s, 200, %s)",
                (fs.name, features[0], json.dumps({"object_id": {"!=": "x"}})),
            ).fetchall()
            settings = conn.execute(
                """SELECT DISTINCT current_setting('hnsw.ef_search'),
                                   current_setting('hnsw.iterative_scan') FROM embeddings"""
            ).fetchall()
    assert len(rows) == 200  # at ef_search 40 four shards would yield 160 at most
    assert any(n.startswith("simsearch: index scan") for n in notices), notices
    assert not any(n.startswith("simsearch: exact scan") for n in notices), notices
    # Restored afterwards, on the workers too.
    assert settings == [("40", "off")]


def test_where_id_and_sql_functions(
    cli, coordinator: CitusCluster, feature_dir: Path, origin_model: Path, tmp_path: Path
) -> None:
    _ingest(cli, feature_dir, origin_model)
    assert cli("index-build").code == 0
    ids, _ = read_all(feature_dir)
    red = set(ids[::50].tolist())
    table = tmp_path / "meta.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object_id", "colour"])
        writer.writerows([i, "red" if i in red else "blue"] for i in ids.tolist())
    assert cli("meta", "import", table).code == 0
    stored = str(ids[100])
    for extra in ([], ["--where", "colour=red"], ["--where", "colour=blue"]):
        default = cli("query", "--id", stored, "-n", "7", *extra)
        exact = cli("query", "--id", stored, "-n", "7", "--exact", *extra)
        assert default.code == 0 and exact.code == 0, default.err + exact.err
        assert len(default.lines) == 7, default.out  # n rows whenever n images match
        same_answer(parse(default.lines), parse(exact.lines))
        assert stored not in default.out
        if extra == ["--where", "colour=red"]:
            assert {line.split()[0] for line in default.lines} <= red
    with psycopg.connect(coordinator.url) as conn:
        similar = conn.execute(
            "SELECT object_id, distance FROM simsearch_similar('features', %s, 7)", (stored,)
        ).fetchall()
        vector = conn.execute("SELECT simsearch_vector('features', %s)::text", (stored,)).fetchone()
        by_vector = conn.execute(
            "SELECT object_id FROM simsearch_knn('features', %s::vector, 1)",
            (vector[0],),  # type: ignore[index]
        ).fetchall()
    same_answer(
        [(o, float(d)) for o, d in similar], parse(cli("query", "--id", stored, "-n", "7").lines)
    )
    assert by_vector == [(stored,)]


def test_delete_drop_and_reingest_stay_consistent(
    cli, coordinator: CitusCluster, feature_dir: Path, origin_model: Path, gallery: list[Path]
) -> None:
    _ingest(cli, feature_dir, origin_model)
    ids, _ = read_all(feature_dir)
    gone = [gallery[0].name, gallery[1].name]
    deleted = cli("delete", *gone)
    assert deleted.code == 0, deleted.err
    assert deleted.out.startswith("deleted 2 rows from every feature set and 2 images")
    assert sum(_rows_per_worker(coordinator).values()) == len(ids) - 2
    assert sum(_rows_per_worker(coordinator, "images").values()) == len(ids) - 2
    with psycopg.connect(coordinator.url) as conn:
        ledger = conn.execute("SELECT sum(rows), sum(deleted) FROM shards").fetchone()
    assert ledger == (len(ids), 2)
    assert gallery[0].name not in cli("query", gallery[0], "--exact").out
    # Re-ingesting unchanged files brings nothing deleted back.
    again = cli("ingest", feature_dir, "--model", origin_model)
    assert again.code == 0 and sum(_rows_per_worker(coordinator).values()) == len(ids) - 2
    dropped = cli("drop", "features")
    assert dropped.code == 0, dropped.err
    assert sum(_rows_per_worker(coordinator).values()) == 0
    with psycopg.connect(coordinator.url) as conn:
        assert conn.execute("SELECT count(*) FROM shards").fetchone() == (0,)
    _ingest(cli, feature_dir, origin_model)
    assert sum(_rows_per_worker(coordinator).values()) == len(ids)
    reference = _reference(cli, feature_dir, origin_model, gallery[0])
    same_answer(parse(cli("query", gallery[0], "--exact").lines), reference)


def test_distribute_converts_an_existing_database(
    cli, coordinator: CitusCluster, feature_dir: Path, origin_model: Path, gallery: list[Path]
) -> None:
    """A simsearch database made on the coordinator before it had workers (here: migrated
    without the first-use step) is converted in place by `simsearch db distribute`."""
    from simsearch.db import connect

    with connect.connect(migrate=False) as conn:
        connect.upgrade(conn)  # Alembic only: the tables stay local to the coordinator
    _ingest(cli, feature_dir, origin_model)
    assert cli("index-build").code == 0
    status = cli("db", "status")
    assert "tables not distributed (run `simsearch db distribute`)" in status.out
    assert not _distributed(coordinator)
    result = cli("db", "distribute", "--shard-count", "2")
    assert result.code == 0, result.err
    assert "images, embeddings: distributed by object_id, co-located, 2 shards" in result.out
    assert "embeddings: removed the coordinator's copy of the moved rows" in result.out
    ids, _ = read_all(feature_dir)
    per_worker = _rows_per_worker(coordinator)
    assert sum(per_worker.values()) == len(ids) and min(per_worker.values()) > 0
    reference = _reference(cli, feature_dir, origin_model, gallery[2])
    for extra in (["--exact"], []):
        same_answer(parse(cli("query", gallery[2], *extra).lines), reference)
    second = cli("db", "distribute")
    assert second.code == 0 and second.out.startswith("nothing to do"), second.out


def _distributed(cluster: CitusCluster) -> bool:
    with psycopg.connect(cluster.url) as conn:
        row = conn.execute("SELECT count(*) FROM citus_tables").fetchone()
    return bool(row and row[0])


def test_eval_and_the_server_engine(
    cli, coordinator: CitusCluster, feature_dir: Path, origin_model: Path, gallery: list[Path]
) -> None:
    from simsearch.options import QueryOptions
    from simsearch.server.engine import Engine

    _ingest(cli, feature_dir, origin_model)
    assert cli("index-build").code == 0
    result = cli("eval", "--sample", "8", "--ef", "40", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["settings"][0]["recall"] == 1.0
    engine = Engine()
    engine.open()
    try:
        (matches,) = engine.cli_query([gallery[4]], QueryOptions(n=5))
        assert (matches[0].object_id, matches[0].distance) == (gallery[4].name, 0.0)
        reference = _reference(cli, feature_dir, origin_model, gallery[4], 5)
        same_answer([(m.object_id, m.distance) for m in matches], reference)
    finally:
        engine.close()


def test_distribute_refuses_a_plain_server(cli, empty_db: None) -> None:
    result = cli("db", "distribute")
    assert result.code != 0
    assert result.err.startswith("error: expected a Citus coordinator, found PostgreSQL 18")
    assert "Traceback" not in result.err and len(result.err.splitlines()) == 1
    assert "engine: PostgreSQL 18" in cli("db", "status").out


def test_index_a_folder_then_filter_by_its_columns(
    cli, coordinator: CitusCluster, gallery: list[Path], origin_model: Path
) -> None:
    """`simsearch index` (upserts into the distributed images table, the image folder into
    a reference table) and a `--where` on the columns it fills."""
    folder = gallery[0].parent
    result = cli("index", folder, "--model", origin_model, "--feature-set", "photos")
    assert result.code == 0, result.err
    assert f"added {len(gallery)} of {len(gallery)} images" in result.out
    again = cli("index", folder, "--model", origin_model, "--feature-set", "photos")
    assert f"added 0 of {len(gallery)} images" in again.out, again.out + again.err
    wide = cli("query", gallery[3], "-n", "4", "--where", "width>=100")
    exact = cli("query", gallery[3], "-n", "4", "--where", "width>=100", "--exact")
    assert wide.code == 0 and len(wide.lines) == 4, wide.err
    same_answer(parse(wide.lines), parse(exact.lines))
    with psycopg.connect(coordinator.url) as conn:
        widths = dict(
            conn.execute(
                "SELECT object_id, width FROM images WHERE object_id = ANY(%s)",
                ([line.split()[0] for line in wide.lines],),
            ).fetchall()
        )
        roots = conn.execute("SELECT image_roots FROM feature_sets").fetchone()
    assert len(widths) == 4 and min(widths.values()) >= 100
    assert roots == ([str(folder.resolve())],)
