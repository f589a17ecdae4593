"""``simsearch embed``: a folder of images to shards in the origin's format, resumably.

Files are taken in sorted order and cut into shards of ``shard_size`` files. Each shard is written
features first, ids second, each to a temporary name renamed into place, and then recorded in
``simsearch.json``: a shard the manifest lists is complete. A re-run embeds only the files no
listed shard holds (an interrupted shard, or files added since) into new shards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config
from .errors import InputError
from .files import write_atomic
from .gallery import ImageRecord, list_images
from .manifest import Manifest, manifest_model, read_manifest, write_manifest
from .model import Model, Overrides
from .pipeline import embed_folder, embedding_model
from .preprocess import Preprocess
from .progress import Progress, plural, rate
from .shards import FEATURES_SUFFIX, IDS_SUFFIX, list_shards


@dataclass
class EmbedReport:
    images: int = 0  # embedded in this run
    shards_written: list[str] = field(default_factory=list)
    shards_kept: int = 0  # finished by an earlier run
    unreadable: list[str] = field(default_factory=list)  # one line each: path and reason
    duplicates: int = 0  # files with the same id as an earlier file
    seconds: float = 0.0

    def summary(self) -> str:
        if self.images:
            parts = [
                f"embedded {plural(self.images, 'image')} into "
                f"{plural(len(self.shards_written), 'new shard')} in {self.seconds:.1f} s "
                f"({rate(self.images, self.seconds)} images/s)"
            ]
        else:
            parts = ["nothing new to embed"]
        if self.shards_kept:
            parts.append(f"kept {plural(self.shards_kept, 'finished shard')}")
        if self.duplicates:
            parts.append(f"skipped {plural(self.duplicates, 'duplicate file')}")
        if self.unreadable:
            parts.append(f"skipped {plural(len(self.unreadable), 'unreadable file')}")
        return "; ".join(parts)


def embed(
    image_dir: Path,
    out_dir: Path,
    model: str | None = None,
    overrides: Overrides | None = None,
    decode: str | None = None,
    alpha: str | None = None,
    shard_size: int = config.SHARD_SIZE,
    batch: int = config.BATCH,
    id_mode: str = "sha1",
    progress: Progress | None = None,
) -> EmbedReport:
    progress = progress or Progress(enabled=False)
    report = EmbedReport()
    paths = list_images(image_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: expected a directory for the shards, found a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out_dir)
    chosen = _choose_model(out_dir, manifest, model, overrides, decode, alpha)
    if manifest is None:
        _refuse_foreign_shards(out_dir)
        manifest = Manifest(
            model=chosen.ref,
            model_sha256=chosen.sha256,
            dimension=chosen.interface.dimension or 0,
            preprocess=chosen.preprocess.to_dict(),
            id_mode=id_mode,
            image_dir=str(image_dir.resolve()),
        )
    elif manifest.id_mode != id_mode:
        raise InputError(
            f"{out_dir}: holds shards with {manifest.id_mode} ids; expected --id {id_mode} "
            "to match them (or use another OUT_DIR)"
        )
    report.shards_kept = len(manifest.shards)
    done = {p for files in manifest.shards.values() for p in files}
    pending = [p for p in paths if p not in done]
    seen = _stored_ids(out_dir, manifest)
    number = max((int(name) for name in manifest.shards), default=-1) + 1
    started = time.perf_counter()  # the rate is of embedding, not of loading the model

    for start in range(0, len(pending), shard_size):
        chunk = pending[start : start + shard_size]
        records, vectors = _embed_chunk(
            image_dir, chunk, chosen, batch, id_mode, seen, report, progress
        )
        if records:
            name = f"{number:04d}"
            _write_shard(out_dir, name, [r.object_id for r in records], np.stack(vectors))
            if not manifest.dimension:
                manifest.dimension = int(vectors[0].shape[0])
            manifest.shards[name] = [str(r.path) for r in records]  # always set by the pipeline
            write_manifest(out_dir, manifest)
            report.shards_written.append(name)
            number += 1
    if not manifest.shards:
        write_manifest(out_dir, manifest)  # records the model even when nothing could be read
    progress.clear()
    report.seconds = time.perf_counter() - started
    return report


def _choose_model(
    out_dir: Path,
    manifest: Manifest | None,
    model: str | None,
    overrides: Overrides | None,
    decode: str | None,
    alpha: str | None = None,
) -> Model:
    if manifest is None or (model is None and decode is None and alpha is None):
        return (
            manifest_model(manifest, out_dir)
            if manifest
            else embedding_model(model, overrides, decode, alpha=alpha)
        )
    chosen = embedding_model(model or manifest.model, overrides, decode, alpha=alpha)
    recorded = Preprocess.from_dict(manifest.preprocess).to_dict()  # older ones lack new keys
    if chosen.sha256 != manifest.model_sha256 or chosen.preprocess.to_dict() != recorded:
        raise InputError(
            f"{out_dir}: holds features made with {manifest.model} and other preprocessing; "
            "expected the same model and options to add to it (or use another OUT_DIR)"
        )
    return chosen


def _embed_chunk(
    image_dir: Path,
    chunk: Sequence[str],
    model: Model,
    batch: int,
    id_mode: str,
    seen: set[str],
    report: EmbedReport,
    progress: Progress,
) -> tuple[list[ImageRecord], list[np.ndarray]]:
    records: list[ImageRecord] = []
    vectors: list[np.ndarray] = []
    for item in embed_folder(
        image_dir, chunk, model, batch=batch, id_mode=id_mode, known=seen.__contains__
    ):
        if item.error is not None:
            report.unreadable.append(item.error)
            progress.note(f"skipped: {item.error}")
        elif item.record is None or item.record.object_id in seen:
            report.duplicates += 1
            progress.note(f"duplicate: {item.path} (same bytes as an earlier file)")
        else:
            assert item.vector is not None
            seen.add(item.record.object_id)
            records.append(item.record)
            vectors.append(item.vector)
            report.images += 1
        progress.update(
            f"embedded {report.images:,} images, {rate(report.images, progress.elapsed)} images/s"
        )
    return records, vectors


def _write_shard(out_dir: Path, name: str, ids: list[str], features: np.ndarray) -> None:
    # Features first and ids last: the ids file is what marks a pair as a shard.
    _save_atomic(out_dir / f"{name}{FEATURES_SUFFIX}", features.astype(np.float32, copy=False))
    _save_atomic(out_dir / f"{name}{IDS_SUFFIX}", np.array(ids, dtype=str))


def _save_atomic(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _stored_ids(out_dir: Path, manifest: Manifest) -> set[str]:
    """The ids in the shards the manifest lists, so a re-run never writes one twice."""
    ids: set[str] = set()
    for name in manifest.shards:
        path = out_dir / f"{name}{IDS_SUFFIX}"
        try:
            ids.update(str(v) for v in np.load(path, allow_pickle=False).tolist())
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{path}: listed in {out_dir / 'simsearch.json'} but unreadable ({exc}); "
                "expected the shard simsearch embed wrote"
            ) from None
    return ids


def _refuse_foreign_shards(out_dir: Path) -> None:
    if any(out_dir.glob(f"*{IDS_SUFFIX}")) or any(out_dir.glob(f"*{FEATURES_SUFFIX}")):
        listing = list_shards(out_dir)
        raise InputError(
            f"{out_dir}: already holds {plural(len(listing.shards), 'shard')} that simsearch "
            "embed did not write (no simsearch.json); expected an empty or new OUT_DIR"
        )
