"""The command line: every command documented, errors as one line, the README's promises."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from onnx_models import build_vector_model

from simsearch.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every command path, e.g. ('ingest',), ('db', 'status')."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found.extend(commands(sub, (*prefix, name)))
    return found


ALL_COMMANDS = commands(build_parser())


def test_every_command_is_listed_in_help_and_readme(cli):
    top = cli("--help")
    assert top.code == 0
    for path in ALL_COMMANDS:
        if len(path) == 1:
            assert f"    {path[0]}" in top.out, path
        assert f"simsearch {' '.join(path)}" in README, f"README does not show {path}"


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_command_has_help(cli, path):
    result = cli(*path, "--help")
    assert result.code == 0
    assert result.out.startswith(f"usage: simsearch {' '.join(path)}")


def test_docker_compose_url_matches_readme():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    db = compose["services"]["db"]
    assert db["image"].startswith("pgvector/pgvector:pg1")
    env = db["environment"]
    host_port = db["ports"][0].split(":")[-2]
    url = (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@localhost:{host_port}/{env['POSTGRES_DB']}"
    )
    assert f"SIMSEARCH_DATABASE_URL={url}" in README
    assert "healthcheck" in db and compose["volumes"]


def test_schema_revision_is_alembic_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from simsearch.db import connect

    config = Config()
    config.set_main_option("script_location", str(connect.migrations_dir()))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head == connect.SCHEMA_REVISION
    assert connect.KNOWN_REVISIONS[-1] == head


def test_schema_newer_than_code_is_refused(cli, empty_db):
    from simsearch.db import connect

    with connect.connect() as conn:
        real = connect.schema_revision(conn)
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
        conn.commit()
    try:
        result = cli("db", "status")
        assert result.code == 1
        assert "schema revision 9999, newer than this simsearch knows" in result.err
    finally:
        with connect.connect(migrate=False) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", [real])
            conn.commit()


def test_query_errors_are_one_line(cli, empty_db, feature_dir, origin_model, tmp_path, gallery):
    empty = cli("query", gallery[0])
    assert empty.code == 1 and "no feature sets yet" in empty.err
    assert cli("ingest", feature_dir, "--model", origin_model).code == 0
    cases = {
        "no such image file": [tmp_path / "missing.jpg"],
        "not an image": [tmp_path / "text.jpg"],
        "no feature set named 'nope'": [gallery[0], "--feature-set", "nope"],
        "expected a 4-D image input": [
            gallery[0],
            "--model",
            build_vector_model(tmp_path / "v.onnx"),
        ],
        "not a loadable ONNX model": [gallery[0], "--model", tmp_path / "text.jpg"],
        "no such model file": [gallery[0], "--model", tmp_path / "none.onnx"],
    }
    (tmp_path / "text.jpg").write_text("this is not a JPEG")
    for expected, args in cases.items():
        result = cli("query", *args)
        assert result.code == 1, expected
        assert result.err.startswith("error: ") and expected in result.err, result.err
        assert result.err.count("\n") == 1, result.err


def test_usage_errors_exit_2(cli):
    assert cli("query").code == 2
    assert cli("query", "x.jpg", "-n", "0").code == 2
    assert cli("bogus").code == 2


def test_console_script_and_module_run_without_traceback(tmp_path):
    missing = tmp_path / "missing.jpg"
    for command in (
        [str(Path(sys.executable).parent / "simsearch"), "scan", str(tmp_path), str(missing)],
        [sys.executable, "-m", "simsearch", "scan", str(tmp_path), str(missing)],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1
        assert re.fullmatch(r"error: .*no shards found.*\n", result.stderr), result.stderr
