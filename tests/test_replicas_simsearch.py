"""simsearch with read replicas: SIMSEARCH_REPLICA_URLS sends searches to a real hot standby
(``pg_basebackup -R``), writes to the primary; a replica that is down is skipped, and with the
primary stopped searches still answer from the standby."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from clusters import StreamingPair
from test_citus_simsearch import _RESET
from test_parity import parse, same_answer

from simsearch.db.connect import SCHEMA_REVISION

# A port nothing listens on (the discard port needs root to bind, and nothing here binds it).
DEAD = "postgresql://owner:nope@127.0.0.1:9/postgres"


@pytest.fixture(scope="module")
def loaded(
    replicas: StreamingPair,
    tmp_path_factory: pytest.TempPathFactory,
    gallery: list[Path],
    origin_model: Path,
) -> Iterator[tuple[StreamingPair, Path]]:
    """simsearch's schema and a feature set on the primary, replayed on the standby."""
    from data import write_shards

    from simsearch.model import load_model

    features = load_model(str(origin_model)).embed_files(gallery)
    feature_dir = write_shards(
        tmp_path_factory.mktemp("replicated") / "features",
        [p.name for p in gallery],
        features,
        extra_rows=600,
        seed=4,
        sizes=[300, 340],
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SIMSEARCH_DATABASE_URL", replicas.primary_url)
        env.setenv("SIMSEARCH_REPLICA_URLS", replicas.standby_url)
        from conftest import run_cli

        result = run_cli("ingest", feature_dir, "--model", origin_model)  # writes: the primary
        assert result.code == 0, result.err
        assert run_cli("index-build").code == 0
    replicas.wait_replayed()
    try:
        yield replicas, feature_dir
    finally:
        replicas.primary.execute(*_RESET)


@pytest.fixture()
def routed(
    loaded: tuple[StreamingPair, Path], monkeypatch: pytest.MonkeyPatch
) -> tuple[StreamingPair, Path]:
    pair, feature_dir = loaded
    monkeypatch.setenv("SIMSEARCH_DATABASE_URL", pair.primary_url)
    monkeypatch.setenv("SIMSEARCH_REPLICA_URLS", pair.standby_url)
    return pair, feature_dir


def _server(conn: psycopg.Connection) -> tuple[int, bool]:  # type: ignore[type-arg]
    row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


def test_searches_go_to_the_replica_and_writes_to_the_primary(routed) -> None:  # type: ignore[no-untyped-def]
    from simsearch.db import connect

    pair, _ = routed
    with connect.connect(read_only=True) as conn:
        assert _server(conn) == (pair.standby.port, True)
    with connect.connect() as conn:
        assert _server(conn) == (pair.primary.port, False)


def test_a_failing_replica_is_skipped_then_the_primary(routed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from simsearch.db import connect
    from simsearch.errors import DatabaseError

    pair, _ = routed
    monkeypatch.setenv("SIMSEARCH_REPLICA_URLS", f"{DEAD}, {pair.standby_url}")
    with connect.connect(read_only=True) as conn:
        assert _server(conn) == (pair.standby.port, True)
    monkeypatch.setenv("SIMSEARCH_REPLICA_URLS", DEAD)
    with connect.connect(read_only=True) as conn:
        assert _server(conn) == (pair.primary.port, False)
    monkeypatch.setenv("SIMSEARCH_DATABASE_URL", DEAD.replace(":9/", ":7/"))
    with pytest.raises(DatabaseError) as failed:
        connect.open_read()
    message = str(failed.value)
    assert message.startswith("no server answered a search: replica postgresql://owner:***@")
    assert "primary postgresql://owner:***@127.0.0.1:7/postgres" in message
    assert "nope" not in message and "\n" not in message


def test_cli_query_and_eval_answer_with_the_primary_stopped(  # type: ignore[no-untyped-def]
    routed, cli, gallery, origin_model
) -> None:
    from simsearch.options import QueryOptions
    from simsearch.server.engine import Engine

    pair, feature_dir = routed
    image = gallery[6]
    reference = parse(cli("scan", feature_dir, image, "--model", origin_model, "-n", 5).lines)
    engine = Engine()
    engine.open()
    try:
        with engine.connection() as conn:
            assert _server(conn) == (pair.standby.port, True)
        with pair.primary_stopped():
            assert not pair.primary.running()
            for extra in (["--exact"], [], ["--id", image.name]):
                args = ["query", "-n", 5, *extra] + ([] if "--id" in extra else [image])
                result = cli(*args)
                assert result.code == 0, result.err
                expected = reference[1:] if "--id" in extra else reference
                same_answer(parse(result.lines)[: len(expected)], expected)
            evaluated = cli("eval", "--sample", "5", "--json")
            assert evaluated.code == 0, evaluated.err
            assert json.loads(evaluated.out)["settings"][0]["recall"] == 1.0
            # The server's pool searches on the standby too.
            (matches,) = engine.cli_query([image], QueryOptions(n=5))
            same_answer([(m.object_id, m.distance) for m in matches], reference)
            # Writes need the primary, and say so in one line.
            write = cli("drop", "features")
            assert write.code != 0 and write.err.startswith("error: cannot connect to ")
    finally:
        engine.close()


def test_a_replica_without_the_schema_is_refused_not_migrated(  # type: ignore[no-untyped-def]
    routed, cli, gallery, monkeypatch
) -> None:
    pair, _ = routed
    pair.primary.execute("DROP DATABASE IF EXISTS bare", "CREATE DATABASE bare")
    pair.wait_replayed()
    bare = pair.standby_url.rsplit("/", 1)[0] + "/bare"
    monkeypatch.setenv("SIMSEARCH_REPLICA_URLS", bare)
    result = cli("query", gallery[0], "--no-daemon")
    assert result.code != 0
    assert result.err.startswith(f"error: the server at 127.0.0.1:{pair.standby.port}/bare has no ")
    assert f"expected revision {SCHEMA_REVISION}" in result.err
    assert len(result.err.splitlines()) == 1
    with psycopg.connect(bare) as conn:
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)


def test_replicas_without_a_primary_url_start_no_embedded_server(  # type: ignore[no-untyped-def]
    cli, gallery, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("SIMSEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SIMSEARCH_DATABASE_URL", raising=False)
    monkeypatch.setenv("SIMSEARCH_REPLICA_URLS", DEAD)
    result = cli("query", gallery[0])
    assert result.code != 0
    assert result.err == (
        "error: SIMSEARCH_REPLICA_URLS is set but SIMSEARCH_DATABASE_URL is not: expected the "
        "primary's URL there (replicas copy an external server, not the embedded one)\n"
    )
    assert not (tmp_path / "home").exists()


def test_a_resident_server_started_with_other_replicas_is_not_reused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from simsearch.server import process

    monkeypatch.delenv("SIMSEARCH_REPLICA_URLS", raising=False)
    plain = process.fingerprint()
    monkeypatch.setenv("SIMSEARCH_REPLICA_URLS", DEAD)
    assert process.fingerprint() != plain
