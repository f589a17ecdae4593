"""Run one command and report its own wall time and peak RSS: ``python -m bench.spawn OUT CMD...``.

A child's peak RSS (ru_maxrss) starts from its parent's RSS at fork time, even across exec, so
a command started straight from the benchmark (which holds every vector in memory) would report
the benchmark's size. This small process starts the command instead and writes
"SECONDS MAXRSS_KIB EXIT_CODE" to OUT.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    out, command = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.posix_spawnp(command[0], command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as handle:
        handle.write(f"{seconds} {usage.ru_maxrss} {code}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
