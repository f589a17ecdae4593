"""The shipped default model is the pretrained EfficientNet-Lite0 with the origin's interface."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from simsearch.demo import sample_photos
from simsearch.files import sha256_file
from simsearch.model import BUILTIN_PREFIX, DEFAULT_MODEL, builtin_spec, load_model

MODELS = Path(__file__).resolve().parent.parent / "simsearch" / "models"


def colour_shift(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, np.float32) * np.array([1.15, 0.95, 0.8]) + np.array([10, 0, -5])
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def crop_80(image: Image.Image) -> Image.Image:
    width, height = image.size
    dx, dy = width // 10, height // 10
    return image.crop((dx, dy, width - dx, height - dy))


def half_jpeg_40(image: Image.Image) -> Image.Image:
    small = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=40)
    return Image.open(io.BytesIO(buffer.getvalue()))


EDITS = {
    "colour": colour_shift,
    "crop80": crop_80,
    "half-q40": half_jpeg_40,
    "mirror": ImageOps.mirror,
}


def test_shipped_file_matches_its_spec() -> None:
    spec = builtin_spec()
    onnx_file = MODELS / spec["onnx_file"]
    assert sha256_file(onnx_file) == spec["sha256"]
    assert (MODELS / "LICENSE-efficientnet-lite0.txt").read_text().count("Apache License") >= 1
    assert spec["license"] == "Apache-2.0"


def test_interface_is_the_origins() -> None:
    model = load_model(None)
    assert model.ref == f"{BUILTIN_PREFIX}{DEFAULT_MODEL}"
    assert model.interface.input_name == "inputs:0"
    assert model.interface.output_name == "feature_vector"
    assert model.interface.dimension == 1280
    spec = model.preprocess
    assert (spec.width, spec.height, spec.layout, spec.resample) == (224, 224, "NHWC", "bicubic")
    assert spec.scale == pytest.approx(1 / 255)
    assert not spec.draft  # the origin's preprocessing unless a feature set records otherwise
    (declared,) = model._session.get_inputs()
    assert declared.name == "inputs:0" and list(declared.shape)[1:] == [224, 224, 3]
    # Any batch size; a batch gives what single images give.
    batch = np.random.default_rng(0).random((3, 224, 224, 3), dtype=np.float32)
    together = model.run(batch)
    assert together.shape == (3, 1280) and together.dtype == np.float32
    alone = np.concatenate([model.run(batch[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, array in sample_photos().items():
        paths[name] = folder / f"{name}.png"  # lossless: the originals are the photos themselves
        Image.fromarray(array).save(paths[name])
    return paths


@pytest.mark.parametrize("draft", [False, True], ids=["origin-decode", "draft-decode"])
def test_edited_copies_find_their_originals(
    photo_files: dict[str, Path], tmp_path: Path, draft: bool
) -> None:
    model = load_model(None)
    model = model.with_preprocess(replace(model.preprocess, draft=draft))
    names = list(photo_files)
    originals = model.embed_files([photo_files[n] for n in names])
    edited_paths, owners, kinds = [], [], []
    for index, name in enumerate(names):
        source = Image.open(photo_files[name]).convert("RGB")
        for kind, edit in EDITS.items():
            path = tmp_path / f"{name}-{kind}.jpg"
            edit(source).save(path, quality=95)  # JPEG, so draft decoding applies to the copies
            edited_paths.append(path)
            owners.append(index)
            kinds.append(kind)
    edited = model.embed_files(edited_paths)
    distances = np.linalg.norm(edited[:, None, :] - originals[None, :, :], axis=2)
    nearest = distances.argmin(axis=1)
    wrong = [
        f"{names[o]} {k} -> {names[n]}"
        for o, k, n in zip(owners, kinds, nearest, strict=True)
        if n != o
    ]
    assert not wrong, wrong
    assert len(edited_paths) == 4 * len(names) >= 4 * 18
