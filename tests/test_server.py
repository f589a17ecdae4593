"""`simsearch serve` as a real process on a loopback port, over the real embedded database."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from simsearch.server import process as server_process


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    gallery: Path
    feature_set: str
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def get_json(self, path: str) -> tuple[int, Any]:
        status, _, body = self.request("GET", path)
        return status, json.loads(body)

    def upload(self, data: bytes, filename: str = "photo.jpg", query: str = "") -> tuple[int, Any]:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        status, _, answer = self.request(
            "POST",
            f"/search{query}",
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        return status, json.loads(answer)


def start_server(*args: str, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """`simsearch serve ARGS` in a new process; its pid file's contents once it is ready."""
    env = {k: v for k, v in os.environ.items() if k != "SIMSEARCH_NO_DAEMON"}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "simsearch", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = server_process.running()
        if info and info.get("ready") and info.get("pid") == process.pid:
            return process, info
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}: {log.read_text()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"serve did not become ready: {log.read_text()}")


def stop_server(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def index_gallery(gallery: list[Path], model: Path, name: str = "photos") -> tuple[Path, str]:
    """The gallery indexed (paths, sizes, vectors) into an emptied database as one feature set."""
    from simsearch.db import connect
    from simsearch.indexing import index

    with connect.connect() as conn:
        for (index_name,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'embeddings_hnsw_%'"
        ).fetchall():
            conn.execute(f'DROP INDEX "{index_name}"')
        conn.execute("TRUNCATE feature_sets, images, shards, embeddings RESTART IDENTITY CASCADE")
        conn.commit()
    index(gallery[0].parent, feature_set=name, model=str(model))
    return gallery[0].parent, name


@pytest.fixture(scope="module")
def indexed(gallery: list[Path], origin_model: Path) -> tuple[Path, str]:
    return index_gallery(gallery, origin_model)


@pytest.fixture(scope="module")
def server(indexed: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root, name = indexed
    log = tmp_path_factory.mktemp("server") / "serve.log"
    process, info = start_server(
        "--port",
        "0",
        "--image-root",
        str(root),
        "--max-upload-mb",
        "1",
        "--max-pixels",
        "2000000",
        log=log,
    )
    host, port = info["url"].removeprefix("http://").rstrip("/").rsplit(":", 1)
    yield Server(process, host, int(port), root, name, log)
    if process.poll() is None:
        stop_server(process)


def test_health_feature_sets_and_openapi(server: Server) -> None:
    status, health = server.get_json("/health")
    assert status == 200
    assert health["status"] == "ok" and health["pid"] == server.process.pid
    assert health["fingerprint"] == server_process.fingerprint()
    status, sets = server.get_json("/feature-sets")
    assert status == 200
    assert [(s["name"], s["dimension"], s["rows"]) for s in sets] == [("photos", 64, 40)]
    status, openapi = server.get_json("/openapi.json")
    assert status == 200
    assert {"/search", "/similar/{object_id}", "/thumbnails/{object_id}"} <= set(openapi["paths"])
    assert "/v1/query" not in openapi["paths"]


def test_upload_finds_the_photo_and_matches_the_cli(server: Server, gallery: list[Path]) -> None:
    from simsearch.search import query

    photo = next(p for p in gallery if p.suffix == ".jpg")
    status, answer = server.upload(photo.read_bytes(), photo.name, "?n=5")
    assert status == 200, answer
    assert answer["feature_set"] == "photos"
    first = answer["results"][0]
    assert first["object_id"] == photo.name and first["distance"] == 0.0
    assert first["path"] == photo.name
    with Image.open(photo) as image:
        assert (first["width"], first["height"]) == image.size
    (expected,) = query([photo], n=5, feature_set="photos")
    assert [(r["object_id"], r["distance"]) for r in answer["results"]] == [
        (m.object_id, m.distance) for m in expected
    ]
    status, exact = server.upload(photo.read_bytes(), photo.name, "?n=5&exact=true")
    (expected_exact,) = query([photo], n=5, feature_set="photos", exact=True)
    assert [(r["object_id"], r["distance"]) for r in exact["results"]] == [
        (m.object_id, m.distance) for m in expected_exact
    ]


def test_similar_searches_by_the_stored_vector(server: Server, gallery: list[Path]) -> None:
    # "Similar" means the same everywhere: the stored image itself is left out, as in
    # `query --id` and simsearch_similar() in SQL.
    photo = gallery[3]
    status, answer = server.get_json(f"/similar/{photo.name}?n=4")
    assert status == 200
    found = [r["object_id"] for r in answer["results"]]
    assert len(found) == 4 and photo.name not in found
    _, uploaded = server.upload(photo.read_bytes(), photo.name, "?n=5")
    assert uploaded["results"][0]["object_id"] == photo.name
    assert found == [r["object_id"] for r in uploaded["results"][1:]]
    distances = [r["distance"] for r in answer["results"]]
    assert distances == sorted(distances)


def test_where_filters_as_the_cli_does(server: Server, gallery: list[Path]) -> None:
    from simsearch.search import query_many

    photo = gallery[5]
    status, answer = server.upload(photo.read_bytes(), photo.name, "?n=6&where=width%3E%3D120")
    assert status == 200, answer
    assert answer["results"] and all(r["width"] >= 120 for r in answer["results"])
    ((_, expected),) = query_many([photo], n=6, feature_set="photos", where=("width>=120",))
    assert [(r["object_id"], r["distance"]) for r in answer["results"]] == [
        (m.object_id, m.distance) for m in expected
    ]
    status, similar = server.get_json(f"/similar/{photo.name}?n=6&where=width%3E%3D120")
    assert status == 200 and all(r["width"] >= 120 for r in similar["results"])
    status, bad = server.get_json(f"/similar/{photo.name}?where=width%3E%3Dwide")
    assert status == 422 and "width" in bad["error"]


def test_images_are_served_from_the_files_the_database_knows(
    server: Server, gallery: list[Path]
) -> None:
    png = next(p for p in gallery if p.suffix == ".png")
    status, headers, body = server.request("GET", f"/images/{png.name}")
    assert status == 200
    assert headers["content-type"] == "image/png"
    assert "max-age" in headers["cache-control"]
    assert body == png.read_bytes()


def test_index_records_the_image_folder(server: Server) -> None:
    from simsearch.db import connect, images

    with connect.connect() as conn:
        assert str(server.gallery.resolve()) in images.image_roots(conn)


def test_thumbnails_are_made_once_and_cached(
    server: Server, gallery: list[Path], simsearch_home: Path
) -> None:
    photo = gallery[0]
    status, headers, body = server.request("GET", f"/thumbnails/{photo.name}?size=64")
    assert status == 200
    assert headers["content-type"] == "image/jpeg"
    assert "max-age" in headers["cache-control"] and "etag" in headers
    with Image.open(io.BytesIO(body)) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 64
    cached = sorted((simsearch_home / "thumbnails" / "64").rglob("*.jpg"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    status, again, body2 = server.request("GET", f"/thumbnails/{photo.name}?size=64")
    assert status == 200 and body2 == body and again["etag"] == headers["etag"]
    assert cached[0].stat().st_mtime_ns == mtime  # served from the cache, not made again
    status, _, _ = server.request("GET", f"/thumbnails/{photo.name}?size=5000")
    assert status == 422


def test_limits_refuse_large_uploads_and_huge_images(server: Server) -> None:
    status, answer = server.upload(os.urandom(1_200_000), "big.jpg")  # over --max-upload-mb 1
    assert status == 413 and "bytes" in answer["error"]
    canvas = io.BytesIO()
    Image.new("RGB", (2000, 1001)).save(canvas, "PNG")  # small file, over --max-pixels 2,000,000
    status, answer = server.upload(canvas.getvalue(), "huge.png")
    assert status == 422 and "2002000" in answer["error"].replace(",", "")
    status, answer = server.upload(b"not an image at all", "notes.txt")
    assert status == 422 and "not an image" in answer["error"]
    status, _, _ = server.request("POST", "/search", b"", {"Content-Type": "text/plain"})
    assert status == 422


def test_unknown_ids_and_feature_sets_are_404(server: Server) -> None:
    for path in ("/similar/nope.jpg", "/images/nope.jpg", "/thumbnails/nope.jpg"):
        status, _, body = server.request("GET", path)
        assert status == 404, path
        assert "nope.jpg" in json.loads(body)["error"]
    status, answer = server.get_json("/similar/x.jpg?feature_set=nosuch")
    assert status == 404 and "nosuch" in answer["error"]


def test_paths_never_come_from_the_request(server: Server, gallery: list[Path]) -> None:
    from simsearch.db import connect

    for path in (
        "/images/../../../../etc/passwd",
        "/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/images/%2Fetc%2Fpasswd",
        "/thumbnails/..%2F..%2Fetc%2Fpasswd",
    ):
        status, _, body = server.request("GET", path)
        assert status == 404, path
        assert b"root:" not in body
    # Even a stored path may not climb out of the image root.
    with connect.connect() as conn:
        conn.execute(
            "INSERT INTO images (object_id, path) VALUES ('escape.jpg', '../../../../etc/passwd')"
        )
        conn.commit()
    try:
        status, _, body = server.request("GET", "/images/escape.jpg")
        assert status == 404 and b"root:" not in body
    finally:
        with connect.connect() as conn:
            conn.execute("DELETE FROM images WHERE object_id = 'escape.jpg'")
            conn.commit()


def test_the_cli_door_is_closed_on_tcp(server: Server, gallery: list[Path]) -> None:
    body = json.dumps({"images": ["/etc/passwd"]}).encode()
    status, _, _ = server.request(
        "POST", "/v1/query", body, {"X-Simsearch-Fingerprint": server_process.fingerprint()}
    )
    assert status == 404


def test_the_page_and_its_assets_are_served(server: Server) -> None:
    status, headers, body = server.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"/static/app.js" in body
    status, headers, body = server.request("GET", "/static/app.js")
    assert status == 200 and "javascript" in headers["content-type"]
    assert b"drawMap" in body


def test_socket_is_private_and_sigterm_stops_cleanly(server: Server) -> None:
    """Runs last in this file: it ends the module's server."""
    info = server_process.running()
    assert info is not None and info["pid"] == server.process.pid
    sock = Path(info["socket"])
    assert sock.is_socket()
    assert sock.stat().st_mode & 0o777 == 0o600
    assert sock.parent.stat().st_mode & 0o777 == 0o700
    second = subprocess.run(
        [sys.executable, "-m", "simsearch", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "SIMSEARCH_NO_DAEMON"},
    )
    assert second.returncode == 1
    assert (
        second.stderr.startswith("error: a simsearch server (pid")
        and "Traceback" not in second.stderr
    )
    assert stop_server(server.process) == 0
    assert not sock.exists()
    assert server_process.running() is None
    assert "simsearch server stopped" in server.log.read_text()
