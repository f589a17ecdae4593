"""Timing and memory helpers: child processes with their own peak RSS, medians, percentiles."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # bench.spawn is importable from here


@dataclass(frozen=True)
class Run:
    seconds: float
    max_rss_mib: float
    code: int
    out: str
    err: str


def run_child(
    args: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> Run:
    """Run a process to the end: its wall time and its own peak RSS, via bench.spawn."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as report,
    ):
        launcher = [sys.executable, "-m", "bench.spawn", report.name]
        subprocess.call([*launcher, *args], stdout=out, stderr=err, env=env, cwd=cwd or ROOT)
        seconds, rss_kib, code = report.read().split()
        out.seek(0)
        err.seek(0)
        text_out, text_err = out.read().decode(), err.read().decode()
    return Run(float(seconds), int(rss_kib) / 1024, int(code), text_out, text_err)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
        "load": f"{os.getloadavg()[0]:.1f}",
        "python": platform.python_version(),
    }
