"""The thin ``simsearch query``: hand the work to the resident server over its Unix socket.

Standard library only (http.client, json): this module must not import numpy, psycopg,
onnxruntime or Pillow, whose imports alone cost more than a whole search in the server. A new
process that goes through here spends its time starting Python, not loading libraries.

``query`` returns None whenever the server cannot do the work (none could be started, it broke,
it answers for another configuration); the caller then works in-process, so a query never fails
for the server's sake. Errors about the user's input come back as SimsearchError, worded as the
in-process path words them.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
from pathlib import Path

from .. import config
from ..errors import ServerError, SimsearchError
from ..options import QueryOptions
from ..results import Result
from . import process

TYPE_CHECKING = False  # typing costs an import that the thin client does not need
if TYPE_CHECKING:
    from typing import Any

FINGERPRINT_HEADER = "X-Simsearch-Fingerprint"
_REQUEST_TIMEOUT = 600.0  # an exact scan of a million rows is slow, not broken


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: the server's private door, reachable only by its owner."""

    def __init__(self, path: Path, timeout: float = _REQUEST_TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def query(options: QueryOptions, image: Path) -> list[Result] | None:
    """The server's answer to one ``simsearch query`` (each match with its file's absolute
    path, or None), or None to work in-process instead.

    The image goes as an absolute path, which the server reads itself; so does a model file.
    """
    if config.no_daemon():
        return None
    try:
        absolute = image.resolve(strict=True)
    except OSError:
        return None  # the in-process path words the error exactly as for any query
    if not absolute.is_file():
        return None
    p = process.paths()
    if not process.socket_usable(p.socket):
        return None
    model = options.model
    if model is not None and not model.startswith("builtin:"):
        model = str(Path(model).expanduser().resolve())  # the server's cwd is not ours
    request = {"options": options.replace(model=model).to_json(), "images": [str(absolute)]}
    body = json.dumps(request).encode()
    print_note = sys.stderr.isatty()
    fingerprint = process.fingerprint()
    for attempt in range(2):
        try:
            status, answer = _post(p, "/v1/query", body, fingerprint)
        except OSError as exc:
            if not process.is_connection_error(exc) or attempt:
                return None
            if not _start(p, print_note):
                return None
            continue
        if status == 200:
            (matches,) = answer["matches"]
            return [
                Result(m["object_id"], m["distance"], m.get("path"), None, None) for m in matches
            ]
        if status == 409 and not attempt and answer.get("auto"):
            # A server we started for other code or settings: replace it.
            process.stop(p)
            if not _start(p, print_note):
                return None
            continue
        if 400 <= status < 500 and status != 409 and "error" in answer:
            raise SimsearchError(str(answer["error"]))
        return None  # anything else: the in-process path knows best
    return None


def _post(p: process.Paths, path: str, body: bytes, fingerprint: str) -> tuple[int, dict[str, Any]]:
    connection = UnixHTTPConnection(p.socket)
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={"Content-Type": "application/json", FINGERPRINT_HEADER: fingerprint},
        )
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        answer = json.loads(data) if data else {}
    except ValueError:
        answer = {}
    return response.status, answer if isinstance(answer, dict) else {}


def _start(p: process.Paths, print_note: bool) -> bool:
    """Start a background server unless one started meanwhile or starting failed lately."""
    try:
        with process.start_lock(p):
            info = process.running(p)
            if info is not None and info.get("ready"):
                return True  # another client started it while we waited for the lock
            if process.failed_recently(p):
                return False
            try:
                pid = process.start_background(
                    ["--auto", "--idle-timeout", str(process.AUTO_IDLE_TIMEOUT)], p
                )
            except ServerError as exc:
                process.note_failure(p)
                print(f"note: {exc}; searching in-process", file=sys.stderr)
                return False
            process.clear_failure(p)
    except OSError:
        return False
    if print_note:
        print(
            f"note: started the simsearch server (pid {pid}); `simsearch stop` ends it",
            file=sys.stderr,
        )
    return True


def health(p: process.Paths | None = None) -> dict[str, Any] | None:
    """The server's /health answer over its socket, or None when none answers."""
    p = p or process.paths()
    connection = UnixHTTPConnection(p.socket, timeout=5.0)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        data = response.read()
    except OSError:
        return None
    finally:
        connection.close()
    try:
        answer = json.loads(data)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
