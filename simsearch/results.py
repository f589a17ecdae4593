"""What a search returns: an object id and its distance, plus what is known of its file.

Standard library only, without ``typing`` at run time: the thin ``simsearch query`` client
returns these too, and its whole point is to start fast.
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple

    class Match(NamedTuple):
        object_id: str
        distance: float  # Euclidean

    class Result(NamedTuple):
        object_id: str
        distance: float
        path: str | None
        width: int | None
        height: int | None

        def to_json(self) -> dict[str, Any]: ...

else:
    Match = namedtuple("Match", ["object_id", "distance"])

    class Result(namedtuple("Result", ["object_id", "distance", "path", "width", "height"])):
        """A match with its image file's recorded path and size (the server's answers)."""

        __slots__ = ()

        def to_json(self):
            return self._asdict()
