"""Every error simsearch raises on purpose, and how it is told to the user.

The tree (each class carries the HTTP status the search server answers with)::

    SimsearchError (400)            anything the user can fix; the CLI prints one line, exits 1
    ├── InputError (422)            a file or argument is not what simsearch expects
    │   ├── ShardError              a feature shard is missing, malformed or inconsistent
    │   ├── ImageError              a query or gallery image cannot be read
    │   │   └── ImageTooLarge       an upload declares more pixels than the server accepts
    │   ├── ModelError              an ONNX model is missing, unreadable or unusable
    │   └── NotFound (404)          an object id, image file or feature set nobody knows
    ├── FeatureSetError (400)       a feature set is unknown, empty or ambiguous
    ├── DatabaseError (503)         the database is unreachable or holds something unexpected
    └── ServerError (503)           the search server cannot start, or answered with an error

Standard library only: the thin ``simsearch query`` client imports this module.
"""

from __future__ import annotations

import re


class SimsearchError(Exception):
    """Anything the user can fix: bad input, a missing file, an unreachable database."""

    http_status = 400  # the request must say more (e.g. which feature set)


class InputError(SimsearchError):
    """A file or argument is not what simsearch expects."""

    http_status = 422


class ShardError(InputError):
    """A feature shard is missing, malformed or inconsistent."""


class ImageError(InputError):
    """A query or gallery image cannot be read."""


class ImageTooLarge(ImageError):
    """An uploaded image declares more pixels than the server accepts."""


class ModelError(InputError):
    """An ONNX model is missing, unreadable or has no usable image input."""


class NotFound(InputError):
    """An object id, image file or feature set the database does not know."""

    http_status = 404


class FeatureSetError(SimsearchError):
    """A feature set is unknown, empty or ambiguous."""


class DatabaseError(SimsearchError):
    """The database is unreachable, misconfigured or holds something unexpected."""

    http_status = 503


class ServerError(SimsearchError):
    """The search server cannot start, or answered with an error."""

    http_status = 503


def redact(text: str) -> str:
    """``text`` with any password in a PostgreSQL URL or conninfo replaced by ***."""
    text = re.sub(r"(://[^:/@?#\s]*:)[^@/?#\s]*@", r"\1***@", text)
    return re.sub(r"(password=)[^&\s]*", r"\1***", text)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (a driver's, say), passwords masked."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return redact(lines[0]) if lines else type(exc).__name__
