"""Turning an image file into the array a model takes. Pure apart from reading the file.

The origin's preprocessing is the default: ``Image.open(p).convert("RGB").resize((224, 224))``
with Pillow's default filter (bicubic), then ``float32 / 255`` in NHWC order.

``draft`` (off by default) lets the JPEG decoder scale a photo down by 1/2, 1/4 or 1/8 while
decoding (Pillow's ``Image.draft``), never below the model's input size: three to four times
faster on camera photos, but the pixels differ slightly, so it is part of a feature set's recorded
preprocessing and queries apply it exactly when the feature set was made with it.

``alpha`` says what becomes of transparent pixels. "drop" is the origin's ``convert("RGB")``: the
alpha channel is discarded, so whatever colour sits under a transparent pixel (often black, or
leftovers of an editor) shows. "white" composites the image onto white first, as a viewer shows
it; the built-in model's feature sets record it, and queries apply it likewise.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

# Refuse images larger than this before decoding them: a small file can declare a huge canvas
# (a decompression bomb). 100 megapixels covers any camera photo.
MAX_IMAGE_PIXELS = 100_000_000
_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 mean the stored image is rotated a quarter turn

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
LAYOUTS = ("NHWC", "NCHW")
ALPHA_MODES = ("drop", "white")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes model input; stored with each feature set so queries match it."""

    width: int = 224
    height: int = 224
    layout: str = "NHWC"
    resample: str = "bicubic"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    exif_transpose: bool = True
    draft: bool = False  # JPEG DCT-domain downscaling while decoding; see the module docstring
    alpha: str = "drop"  # transparent pixels: "drop" (the origin's) or "white"; see above
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {', '.join(_RESAMPLE)}")
        if self.alpha not in ALPHA_MODES:
            raise ValueError(f"alpha must be one of {', '.join(ALPHA_MODES)}, not {self.alpha!r}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"input size must be positive, not {self.width}x{self.height}")

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        """The model input's shape for ``batch`` images."""
        if self.layout == "NHWC":
            return (batch, self.height, self.width, 3)
        return (batch, 3, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "extra"}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


def open_image(
    path: Path,
    exif_transpose: bool = True,
    draft: tuple[int, int] | None = None,
    data: bytes | None = None,
    alpha: str = "drop",
) -> Image.Image:
    """Open an image file as RGB, refusing what cannot or should not be decoded.

    ``draft`` is the smallest size (width, height, as displayed) a JPEG may be decoded at;
    ``data`` is the file's bytes when the caller has read them (``path`` then only names it);
    ``alpha`` what becomes of transparent pixels (see the module docstring).
    """
    return decode_image(path, exif_transpose, draft, data, alpha)[0]


def decode_image(
    path: Path,
    exif_transpose: bool = True,
    draft: tuple[int, int] | None = None,
    data: bytes | None = None,
    alpha: str = "drop",
) -> tuple[Image.Image, tuple[int, int]]:
    """The image as RGB and its full size (width, height) as displayed, before any draft scaling."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own, lower limit; ours below decides, in one line.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data) if data is not None else path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: expected an image file, found a directory") from None
    except UnidentifiedImageError:
        if _is_empty(path, data):
            raise ImageError(f"{path}: empty file (0 bytes); expected an image") from None
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        # Pillow refuses far past its limit before we see the size; its message has the count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, pixels=int(found.group(1)) if found else None) from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc})") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise _too_large(path, width, height)
    try:
        with image:
            rotated = exif_transpose and image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)
            if draft is not None and image.format in ("JPEG", "MPO"):  # MPO: many cameras
                # Ask for the size before rotation; Pillow keeps at least this many pixels.
                image.draft("RGB", (draft[1], draft[0]) if rotated else draft)
            upright: Image.Image = ImageOps.exif_transpose(image) if exif_transpose else image
            size = (height, width) if rotated else (width, height)
            return to_rgb(upright, alpha), size
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: truncated or corrupt image ({exc})") from None


def to_rgb(image: Image.Image, alpha: str = "drop") -> Image.Image:
    """RGB as the origin made it (``convert("RGB")``), with 16-bit greys scaled, not clipped;
    with ``alpha="white"`` transparent images are first composited onto white."""
    image.load()
    if alpha == "white" and has_alpha(image):
        return on_white(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # convert("RGB") would clip 16-bit values at 255; scale them to 8 bits instead.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def has_alpha(image: Image.Image) -> bool:
    """Whether some pixels may be transparent: an alpha channel, or a transparent colour."""
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info


def on_white(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it on a white page: each pixel blended by its alpha."""
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def draft_size(spec: Preprocess) -> tuple[int, int] | None:
    """The size a JPEG may be draft-decoded at under ``spec``, or None for full decoding."""
    return (spec.width, spec.height) if spec.draft else None


def image_to_array(image: Image.Image, spec: Preprocess) -> np.ndarray:
    """One image as float32 [H, W, 3] (NHWC) or [3, H, W] (NCHW), resized and scaled."""
    resized = image.resize((spec.width, spec.height), _RESAMPLE[spec.resample])
    # Divide, as the origin did (``/ 255``), so that inputs match it to the last bit.
    array = np.asarray(resized, dtype=np.float32) / np.float32(1.0 / spec.scale)
    if spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0):
        array = (array - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "NCHW":
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array, dtype=np.float32)


def load_batch(paths: Sequence[Path], spec: Preprocess) -> np.ndarray:
    """Several image files as one model input batch."""
    return np.stack(
        [
            image_to_array(
                open_image(p, spec.exif_transpose, draft_size(spec), alpha=spec.alpha), spec
            )
            for p in paths
        ]
    )


def _is_empty(path: Path, data: bytes | None) -> bool:
    if data is not None:
        return not data
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _too_large(
    path: Path, width: int | None = None, height: int | None = None, pixels: int | None = None
) -> ImageError:
    size = f" ({width}x{height})" if width and height else f" ({pixels:,} pixels)" if pixels else ""
    return ImageError(
        f"{path}: image too large{size}; at most {MAX_IMAGE_PIXELS:,} pixels are decoded"
    )
