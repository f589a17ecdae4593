"""The external-server path: SIMSEARCH_DATABASE_URL pointing at a password-protected TCP server."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from pgcluster import PASSWORD, tcp_cluster


@pytest.fixture()
def external_url(monkeypatch: pytest.MonkeyPatch):
    # A short path: the cluster's socket directory must fit in a Unix socket name.
    with tempfile.TemporaryDirectory(prefix="ss-ext-") as folder, tcp_cluster(Path(folder)) as url:
        monkeypatch.setenv("SIMSEARCH_DATABASE_URL", url)
        yield url


def test_ingest_and_query_through_url(cli, external_url, feature_dir, origin_model, gallery):
    loaded = cli("ingest", feature_dir, "--model", origin_model)
    assert loaded.code == 0, loaded.err
    result = cli("query", gallery[2], "-n", "3")
    assert result.code == 0, result.err
    assert result.lines[0] == f"{gallery[2].name} 0.0"
    status = cli("db", "status")
    assert "127.0.0.1" in status.out and PASSWORD not in status.out
    assert "schema revision" in status.out
    assert cli("db", "url").out.strip() == external_url


def test_wrong_password_is_one_line_without_the_password(cli, external_url, monkeypatch):
    wrong = external_url.replace(PASSWORD, "not-the-password")
    monkeypatch.setenv("SIMSEARCH_DATABASE_URL", wrong)
    result = cli("db", "status")
    assert result.code == 1
    assert result.err.startswith("error: cannot connect to postgresql://owner:***@127.0.0.1")
    assert "not-the-password" not in result.err and result.err.count("\n") == 1


def test_unreachable_server(cli, monkeypatch):
    monkeypatch.setenv("SIMSEARCH_DATABASE_URL", "postgresql://me:pw@127.0.0.1:1/nothing")
    result = cli("query", "x.jpg")
    assert result.code == 1
    assert "cannot connect to postgresql://me:***@127.0.0.1:1/nothing" in result.err
    assert ":pw@" not in result.err
