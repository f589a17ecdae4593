"""Pure parts of the SQL layer."""

from __future__ import annotations

import os

from simsearch.db.hnsw import build_memory_mb


def test_build_memory_holds_the_graph_within_a_quarter_of_ram():
    ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    assert build_memory_mb(3_000, 64, 16) == 2048  # small sets keep the 2 GB floor
    assert build_memory_mb(100_000, 1280, 16) == 2048  # the 391 MiB graph fits the floor
    million = build_memory_mb(1_000_000, 1280, 16)
    assert million == 2048 or million > 3_900  # ~3.9 GiB graph, unless RAM is too small
    assert million <= max(2048, ram_mb // 4)
