"""Query images: broken ones cost one line; unusual but valid ones give the vector they should.

A feature set holds, beside the gallery, the vector of each unusual image's expected RGB
rendering (alpha dropped, palette expanded, grey repeated, 16 bits scaled to 8, EXIF orientation
applied, a GIF's first frame). Querying with the unusual file must find that row first.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from data import write_shards
from PIL import Image, ImageDraw

from simsearch import preprocess

# Pillow's transpose that displays an image stored with each EXIF orientation; the stored pixels
# are the upright image under the inverse transform.
_DISPLAY = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE = {**_DISPLAY, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def picture(width: int = 160, height: int = 96, seed: int = 0) -> Image.Image:
    """An asymmetric picture: any rotation or flip changes its features."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3))
    ramp[: height // 3, :, 0] = 255
    image = Image.fromarray(ramp.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.rectangle(
            [x, y, x + int(rng.integers(8, 40)), y + int(rng.integers(8, 40))], fill=fill
        )
    return image


def oriented(upright: Image.Image, orientation: int) -> tuple[Image.Image, Image.Exif]:
    """Pixels as a camera would store them for ``orientation``, and the EXIF that says so."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return upright.transpose(_INVERSE[orientation]), exif


def save(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, **options)
    return path


# name -> (write the unusual file, the RGB image it should be read as, exact match expected)
Case = Callable[[Path], tuple[Path, Image.Image, bool]]


def _alpha(folder: Path) -> tuple[Path, Image.Image, bool]:
    base = picture(seed=1)
    rgba = np.dstack(
        [np.asarray(base), np.where(np.arange(160) < 80, 0, 255)[None, :].repeat(96, 0)]
    )
    return save(Image.fromarray(rgba.astype(np.uint8), "RGBA"), folder / "alpha.png"), base, True


def _palette(folder: Path) -> tuple[Path, Image.Image, bool]:
    pal = picture(seed=2).quantize(16)
    path = save(pal, folder / "palette.png", transparency=0)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    return path, pal.convert("RGB"), True


def _grey(folder: Path) -> tuple[Path, Image.Image, bool]:
    grey = picture(seed=3).convert("L")
    return save(grey, folder / "grey.png"), grey.convert("RGB"), True


def _grey16(folder: Path) -> tuple[Path, Image.Image, bool]:
    grey = picture(seed=4).convert("L")
    wide = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    path = save(wide, folder / "grey16.png")
    assert Image.open(path).mode.startswith("I")
    return path, grey.convert("RGB"), True


def _cmyk(folder: Path) -> tuple[Path, Image.Image, bool]:
    base = picture(seed=5)
    path = save(base.convert("CMYK"), folder / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    return path, base, False  # JPEG is lossy: nearest, not identical


def _gif(folder: Path) -> tuple[Path, Image.Image, bool]:
    first, second = picture(seed=6).quantize(64), picture(seed=60).quantize(64)
    path = save(first, folder / "anim.gif", save_all=True, append_images=[second], duration=100)
    assert getattr(Image.open(path), "n_frames", 1) == 2
    return path, first.convert("RGB"), True


def _exif_png(folder: Path) -> tuple[Path, Image.Image, bool]:
    upright = picture(seed=7)
    stored, exif = oriented(upright, 6)
    return save(stored, folder / "rotated.png", exif=exif), upright, True


def _exif_jpeg(folder: Path) -> tuple[Path, Image.Image, bool]:
    upright = picture(seed=8)
    stored, exif = oriented(upright, 8)
    return save(stored, folder / "rotated.jpg", exif=exif, quality=95), upright, False


CASES: dict[str, Case] = {
    "png-alpha": _alpha,
    "palette-png-transparency": _palette,
    "greyscale": _grey,
    "greyscale-16-bit": _grey16,
    "cmyk-jpeg": _cmyk,
    "gif-first-frame": _gif,
    "exif-rotated-png": _exif_png,
    "exif-rotated-jpeg": _exif_jpeg,
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_unusual_image_reads_as_expected(case, cli, empty_db, tmp_path, gallery, origin_model):
    from simsearch.model import load_model

    unusual, expected, exact = CASES[case](tmp_path)
    expected_png = save(expected, tmp_path / "expected.png")
    distractors = [expected_png]
    if case == "gif-first-frame":  # the second frame must not be what is read
        distractors.append(
            save(picture(seed=60).quantize(64).convert("RGB"), tmp_path / "frame2.png")
        )
    if case.startswith("exif"):  # nor the stored pixels as they lie
        distractors.append(save(Image.open(unusual).convert("RGB"), tmp_path / "as-stored.png"))
    model = load_model(str(origin_model))
    paths = [*distractors, *gallery]
    features = model.embed_files(paths)
    shards = write_shards(tmp_path / "features", [p.name for p in paths], features)
    assert cli("ingest", shards, "--model", origin_model, "--feature-set", "unusual").code == 0

    result = cli("query", unusual, "-n", "3", "--feature-set", "unusual")
    assert result.code == 0 and result.err == "", result.err
    best, distance = result.lines[0].split()
    assert best == "expected.png", result.out
    if exact:
        assert float(distance) < 1e-5
    else:  # lossy JPEG: far nearer the expected rendering than anything else
        second = float(result.lines[1].split()[1])
        assert float(distance) < 0.25 * second, result.out


@pytest.mark.parametrize("orientation", range(2, 9))
def test_every_exif_orientation_is_applied(orientation, origin_model, tmp_path):
    from simsearch.model import load_model

    upright = picture(seed=9)
    stored, exif = oriented(upright, orientation)
    model = load_model(str(origin_model))
    got, want, sideways = model.embed_files(
        [
            save(stored, tmp_path / "o.png", exif=exif),
            save(upright, tmp_path / "u.png"),
            save(stored, tmp_path / "s.png"),
        ]
    )
    np.testing.assert_array_equal(got, want)
    assert not np.allclose(got, sideways)


def test_orientation_is_the_same_when_embedding_and_querying(cli, empty_db, tmp_path, origin_model):
    """`simsearch index` (threaded, draft-decoded JPEGs) and `query` see one orientation."""
    folder = tmp_path / "photos"
    folder.mkdir()
    upright = picture(900, 600, seed=10)  # big enough that draft decoding scales it down
    stored, exif = oriented(upright, 6)
    save(stored, folder / "tagged.jpg", exif=exif, quality=92)
    save(stored, folder / "untagged.jpg", quality=92)
    save(upright, folder / "upright.jpg", quality=92)
    indexed = cli(
        "index",
        folder,
        "--model",
        origin_model,
        "--decode",
        "draft",
        "--id",
        "path",
        "--feature-set",
        "photos",
    )
    assert indexed.code == 0, indexed.err
    result = cli("query", folder / "tagged.jpg", "-n", "3", "--feature-set", "photos")
    assert result.code == 0, result.err
    assert result.lines[0] == "tagged.jpg 0.0", result.out
    # Displayed the same way, the upright copy is next; the untagged one, lying on its side, last.
    assert [line.split()[0] for line in result.lines] == [
        "tagged.jpg",
        "upright.jpg",
        "untagged.jpg",
    ]


def png_bomb(path: Path, side: int = 30_000) -> Path:
    """A real PNG of side x side black pixels at 1 bit each: ~110 KB on disk, 900 MP decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


def jpeg_header_bomb(path: Path) -> Path:
    """A small JPEG whose frame header claims 60000 x 60000 pixels."""
    buffer = io.BytesIO()
    picture(64, 64).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)
    path.write_bytes(bytes(data))
    return path


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    picture(400, 300).save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


BROKEN = {
    "empty": (lambda p: (p.write_bytes(b""), p)[1], "empty file (0 bytes)"),
    "truncated-jpeg": (truncated_jpeg, "truncated or corrupt image"),
    "png-bomb": (png_bomb, "image too large (900,000,000 pixels)"),
    "jpeg-header-bomb": (jpeg_header_bomb, "image too large (3,600,000,000 pixels)"),
    "moderate-bomb": (lambda p: png_bomb(p, 12_000), "image too large (12000x12000)"),
}


@pytest.mark.parametrize("case", BROKEN, ids=str)
def test_broken_query_image_is_one_line(case, cli, empty_db, tmp_path, gallery, origin_model):
    make, expected = BROKEN[case]
    image = make(tmp_path / ("image.png" if "png" in case else "image.jpg"))
    shards = write_shards(
        tmp_path / "features", ["a.jpg", "b.jpg"], np.eye(2, 64, dtype=np.float32)
    )
    assert cli("ingest", shards, "--model", origin_model).code == 0
    result = cli("query", image)
    assert result.code == 1
    assert result.err.startswith(f"error: {image}: {expected}"), result.err
    assert result.err.count("\n") == 1, result.err  # no Pillow warning, no traceback


def test_bomb_is_refused_without_allocating_it(tmp_path):
    """Peak memory of a process that refuses a 900-megapixel PNG stays near its baseline."""
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    script = f"""
import resource, time
from pathlib import Path
from simsearch.errors import ImageError
from simsearch.preprocess import open_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    open_image(Path({str(bomb)!r}))
except ImageError as exc:
    print(exc)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, time.perf_counter() - start)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    message, figures = done.stdout.splitlines()
    grown_kib, seconds = figures.split()
    assert "image too large" in message and f"{preprocess.MAX_IMAGE_PIXELS:,}" in message
    assert int(grown_kib) < 20 * 1024  # decoding would take 900 MB, and 2.7 GB as RGB
    assert float(seconds) < 1.0
