"""A locked-down database: SQL only with bound values, hostile names harmless, a private embedded
server, and no password in any message or log."""

from __future__ import annotations

import ast
import json
import socket
import stat
import tempfile
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pgcluster import PASSWORD, tcp_cluster

from simsearch import config
from simsearch.db import connect, embedded

ROOT = Path(__file__).resolve().parent.parent
SQL_CALLS = {"execute", "executemany", "copy", "stream"}


def _spliced(node: ast.expr) -> str | None:
    """How a statement's text is built from Python values, if it is: f-string, %, +, .format."""
    if isinstance(node, ast.JoinedStr) and any(
        isinstance(v, ast.FormattedValue) for v in node.values
    ):
        return "f-string"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return "% or + on strings"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and isinstance(node.func.value, ast.Constant)
    ):
        return "str.format"
    return None


def test_every_sql_statement_is_parameterised():
    """No statement text is built from values in Python; psycopg.sql composes identifiers."""
    sources = sorted((ROOT / "simsearch").rglob("*.py")) + sorted(
        (ROOT / "migrations").rglob("*.py")
    )
    offences, statements = [], 0
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in SQL_CALLS or not node.args:
                continue
            statements += 1
            how = _spliced(node.args[0])
            if how:
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno}: {how}")
    assert statements > 40  # the scan does find the statements
    assert offences == []


HOSTILE = [
    'x"; DROP TABLE embeddings; --',
    "fs'); DELETE FROM shards; --",
    "embeddings_hnsw_1",
    "Ünïcødé name with spaces",
]


def _tables_intact() -> tuple[int, int, int]:
    with connect.connect() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM embeddings), (SELECT count(*) FROM shards), "
            "(SELECT count(*) FROM feature_sets)"
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_hostile_feature_set_names_and_ids_are_only_values(cli, empty_db, tmp_path):
    ids = np.array(["a'); DROP TABLE images; --", 'b"; DROP TABLE shards; --', "c\\.jpg"])
    vectors = np.eye(3, 8, dtype=np.float32)
    for number, name in enumerate(HOSTILE):
        folder = tmp_path / f"fs{number}"
        folder.mkdir()
        np.save(folder / "0000.object_ids.npy", ids)
        np.save(folder / "0000.features.npy", vectors + number)
        result = cli("ingest", folder, "--feature-set", name)
        assert result.code == 0, result.err
        # An index is named by the feature set's integer id, never by its name.
        built = cli("index-build", "--feature-set", name)
        assert built.code == 0, built.err
    assert _tables_intact() == (3 * len(HOSTILE), len(HOSTILE), len(HOSTILE))
    status = cli("db", "status").out
    for name in HOSTILE:
        assert f"feature set {name}: 3 rows" in status

    with connect.connect() as conn:
        for number, name in enumerate(HOSTILE):
            rows = conn.execute(
                "SELECT object_id, distance FROM simsearch_knn(%s, %s, 3, NULL, true)",
                [name, vectors[1] + number],
            ).fetchall()
            assert rows[0] == (ids[1], 0.0)
            similar = conn.execute(
                "SELECT object_id FROM simsearch_similar(%s, %s, 1)", [name, str(ids[0])]
            ).fetchall()
            assert len(similar) == 1 and similar[0][0] in ids
            conn.commit()
        # Hostile filter keys and values are data; a hostile operator is refused by name.
        hostile_filter = {HOSTILE[0]: HOSTILE[1], "width": {">=": 1}, "path": HOSTILE[2]}
        rows = conn.execute(
            "SELECT * FROM simsearch_knn(%s, %s, 3, %s::jsonb)",
            [HOSTILE[0], vectors[0], json.dumps(hostile_filter)],
        ).fetchall()
        assert rows == []
        conn.commit()
        for bad in ({"width": {"; DROP TABLE images; --": 1}}, {"object_id": {"=": [1]}}):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="simsearch: "):
                conn.execute(
                    "SELECT * FROM simsearch_knn(%s, %s, 3, %s::jsonb)",
                    [HOSTILE[0], vectors[0], json.dumps(bad)],
                )
            conn.rollback()
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="no feature set named"):
            conn.execute("SELECT * FROM simsearch_knn(%s, %s, 3)", [HOSTILE[1] + "x", vectors[0]])
        conn.rollback()
    assert _tables_intact() == (3 * len(HOSTILE), len(HOSTILE), len(HOSTILE))


def test_embedded_server_is_private(empty_db):
    home = config.home()
    data = embedded.pgdata(home)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    with connect.connect() as conn:
        listen, sockets, port, data_directory = conn.execute(
            "SELECT current_setting('listen_addresses'),"
            " current_setting('unix_socket_directories'),"
            " current_setting('port')::int, current_setting('data_directory')"
        ).fetchone()
    assert listen == ""  # no TCP at all
    assert Path(data_directory) == data.resolve()
    for folder in sockets.split(","):
        # The socket lives in the private data directory (or another directory only its owner
        # can enter): other local users cannot reach it, even though local logins are trusted.
        mode = stat.S_IMODE(Path(folder.strip()).stat().st_mode)
        assert Path(folder.strip()).resolve() == data.resolve() or mode & 0o077 == 0, (
            folder,
            oct(mode),
        )
    for host in ("127.0.0.1", "::1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.settimeout(1)
            assert probe.connect_ex((host, port)) != 0, f"something listens on {host}:{port}"


def test_no_password_in_messages_or_logs(cli, monkeypatch, tmp_path, small_features):
    home = tmp_path / "home"
    monkeypatch.setenv("SIMSEARCH_HOME", str(home))
    with tempfile.TemporaryDirectory(prefix="ss-sec-") as folder, tcp_cluster(Path(folder)) as url:
        outputs = []
        monkeypatch.setenv("SIMSEARCH_DATABASE_URL", url)
        for args in (
            ["ingest", small_features],
            ["db", "status"],
            ["query", tmp_path / "none.jpg"],
        ):
            result = cli(*args)
            outputs += [result.out, result.err]
        wrong = url.replace(PASSWORD, "wrong-" + PASSWORD)
        monkeypatch.setenv("SIMSEARCH_DATABASE_URL", wrong)
        for args in (["db", "status"], ["ingest", small_features]):
            result = cli(*args)
            assert result.code == 1
            outputs += [result.out, result.err]
        # Also a URL whose password sits in the query string, libpq style.
        monkeypatch.setenv(
            "SIMSEARCH_DATABASE_URL",
            url.replace(f":{PASSWORD}@", "@") + f"?password=wrong-{PASSWORD}",
        )
        result = cli("db", "status")
        assert result.code == 1
        outputs += [result.out, result.err]
        server_log = (Path(folder) / "log").read_text()
        assert "password authentication failed" in server_log  # the log is the real one
        logs = [server_log] + [
            path.read_text(errors="replace") for path in home.rglob("*") if path.is_file()
        ]
    for text in outputs + logs:
        assert PASSWORD not in text


@pytest.fixture()
def small_features(tmp_path: Path) -> Path:
    folder = tmp_path / "small"
    folder.mkdir()
    np.save(folder / "0000.object_ids.npy", np.array(["a.jpg", "b.jpg"]))
    np.save(folder / "0000.features.npy", np.eye(2, 8, dtype=np.float32))
    return folder
