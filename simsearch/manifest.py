"""``simsearch.json``: what ``simsearch embed`` wrote into a feature directory, and how.

It records the model (ref and sha256) and the exact preprocessing, so that ``simsearch ingest``
gives the feature set the same and ``simsearch query`` embeds photos the same way; and which
image files each finished shard holds, so that a re-run only embeds the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, ModelError
from .files import write_atomic
from .model import Model, load_model
from .preprocess import Preprocess

MANIFEST_NAME = "simsearch.json"
FORMAT = "simsearch-features/1"


@dataclass
class Manifest:
    model: str
    model_sha256: str
    dimension: int
    preprocess: dict[str, Any]
    id_mode: str
    image_dir: str
    shards: dict[str, list[str]] = field(default_factory=dict)  # shard name -> relative paths

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "dimension": self.dimension,
            "preprocess": self.preprocess,
            "id": self.id_mode,
            "image_dir": self.image_dir,
            "shards": self.shards,
        }


def read_manifest(feature_dir: Path) -> Manifest | None:
    """The directory's manifest, or None when simsearch did not write one."""
    path = feature_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable simsearch manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: expected a manifest of format {FORMAT!r}")
    try:
        return Manifest(
            model=str(data["model"]),
            model_sha256=str(data["model_sha256"]),
            dimension=int(data["dimension"]),
            preprocess=dict(data["preprocess"]),
            id_mode=str(data["id"]),
            image_dir=str(data.get("image_dir", "")),
            shards={str(k): [str(p) for p in v] for k, v in data.get("shards", {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: manifest is missing or has a bad field ({exc})") from None


def write_manifest(feature_dir: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically: a crash leaves the old one or the new one."""
    path = feature_dir / MANIFEST_NAME
    write_atomic(path, json.dumps(manifest.to_json(), indent=1).encode())


def manifest_model(manifest: Manifest, feature_dir: Path) -> Model:
    """The model the manifest names, with the preprocessing it recorded; refuse a changed file."""
    model = load_model(manifest.model)
    if model.sha256 != manifest.model_sha256:
        raise ModelError(
            f"{feature_dir / MANIFEST_NAME}: features were made with {manifest.model} of sha256 "
            f"{manifest.model_sha256[:12]}…, but that file now has sha256 {model.sha256[:12]}…"
        )
    return model.with_preprocess(Preprocess.from_dict(manifest.preprocess))
