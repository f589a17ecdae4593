"""Progress lines on a terminal; silence elsewhere (logs and pipes get the summary only)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.perf_counter()
        self._last = 0.0
        self._width = 0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def update(self, text: str, force: bool = False) -> None:
        """Overwrite the current line, at most ten times a second."""
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        self.stream.write("\r" + text.ljust(self._width))
        self._width = len(text)
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line that stays, such as a skipped shard: shown on terminals and in logs."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 shard``, ``2 shards``, ``1,000 rows``: a count with its noun in the right number."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"
