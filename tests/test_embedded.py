"""The embedded server is sized for vector search when simsearch creates it."""

from __future__ import annotations

import re

from simsearch import config
from simsearch.db import connect, embedded


def test_settings_written_once_and_in_force(simsearch_home):
    with connect.connect() as conn:  # starts the server if no test has yet
        (in_force,) = conn.execute("SHOW shared_buffers").fetchone()
    settings = embedded.pgdata(config.home()) / embedded.SETTINGS_FILE
    text = settings.read_text()
    shared = re.search(r"^shared_buffers = (\d+)MB", text, re.MULTILINE)
    assert shared is not None and int(shared.group(1)) >= 128
    in_mb = int(in_force[:-2]) * (1024 if in_force.endswith("GB") else 1)
    assert in_mb == int(shared.group(1))
    embedded._write_settings(settings.parent)  # a second start leaves the user's edits alone
    assert settings.read_text() == text


def test_home_too_long_for_a_private_socket_is_refused(cli, monkeypatch, tmp_path):
    long_home = tmp_path / ("h" * 120)
    monkeypatch.setenv("SIMSEARCH_HOME", str(long_home))
    result = cli("db", "status")
    assert result.code == 1
    assert "too long a path for the embedded server's socket" in result.err
    assert not (long_home / "pgdata").exists()
