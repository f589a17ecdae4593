"""``simsearch index``: embed a folder of images and load it into a feature set in one go.

Vectors go in through the same shard loader as ``simsearch ingest`` (one transaction per chunk,
with its ledger row), and each image's path, size and dimensions into the images table. Files
whose id the feature set already holds are hashed but not decoded, so a re-run adds only what is
new. The feature set records the model and the exact preprocessing, so ``query`` needs only a photo.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config
from .db import connect, feature_sets, hnsw, images, ledger, projections
from .db.feature_sets import Connection, FeatureSet
from .errors import FeatureSetError
from .gallery import ImageRecord, list_images
from .model import Model, Overrides
from .pipeline import embed_folder, embedding_model
from .preprocess import Preprocess
from .progress import Progress, plural, rate
from .shards import Shard

DEFAULT_CHUNK = 1000  # images per transaction: a crash loses at most this much work


@dataclass
class IndexReport:
    feature_set: str
    files: int = 0
    added: int = 0
    known: int = 0  # images already in the feature set (each counted once)
    duplicates: list[str] = field(default_factory=list)  # "copy (same bytes as first)"
    unreadable: list[str] = field(default_factory=list)
    gone: int = 0  # files recorded under the folder that are no longer there
    pruned: int = 0  # of those, forgotten (--prune)
    pruned_rows: int = 0  # rows removed from the feature set by --prune
    seconds: float = 0.0
    total_rows: int = 0
    index_built: bool = False

    def summary(self) -> str:
        parts = [f"{self.feature_set}: added {self.added:,} of {plural(self.files, 'image')}"]
        if self.added:
            parts[0] += f" in {self.seconds:.1f} s ({rate(self.added, self.seconds)} images/s)"
        if self.known:
            parts.append(f"{self.known:,} already indexed")
        if self.duplicates:
            parts.append(f"skipped {plural(len(self.duplicates), 'duplicate file')}")
        if self.unreadable:
            parts.append(f"skipped {plural(len(self.unreadable), 'unreadable file')}")
        if self.pruned:
            parts.append(
                f"pruned {plural(self.pruned, 'file')} gone from the folder "
                f"({plural(self.pruned_rows, 'row')} removed)"
            )
        elif self.pruned_rows:
            parts.append(f"pruned {plural(self.pruned_rows, 'row')} no file of the folder holds")
        elif self.gone:
            parts.append(f"{plural(self.gone, 'file')} gone from the folder (--prune forgets them)")
        if self.index_built:
            parts.append("built the HNSW index")
        parts.append(f"{plural(self.total_rows, 'image')} in all")
        return "; ".join(parts)


def index(
    image_dir: Path,
    feature_set: str | None = None,
    model: str | None = None,
    overrides: Overrides | None = None,
    decode: str | None = None,
    alpha: str | None = None,
    batch: int = config.BATCH,
    chunk: int = DEFAULT_CHUNK,
    id_mode: str = "sha1",
    progress: Progress | None = None,
    build_index: bool = True,
    prune: bool = False,
) -> IndexReport:
    """Embed and store every image under ``image_dir`` not stored yet; with ``prune``, forget
    the files recorded under it that are gone, and their rows when no other file holds them."""
    progress = progress or Progress(enabled=False)
    name = feature_set or image_dir.resolve().name
    report = IndexReport(feature_set=name)
    paths = list_images(image_dir)
    report.files = len(paths)

    with connect.connect() as conn:
        fs = feature_sets.feature_set(conn, name)
        chosen = _model_for(fs, model, overrides, decode, alpha)
        if fs is None:
            fs = feature_sets.create(
                conn,
                name,
                chosen.interface.dimension or _probe_dimension(chosen),
                chosen.ref,
                chosen.sha256,
                chosen.preprocess.to_dict(),
            )
        root = str(image_dir.resolve())
        images.add_image_root(conn, fs, root)  # images.path is relative to it
        stored = feature_sets.object_ids(conn, fs)
        started = time.perf_counter()  # the rate is of embedding and loading, not server start
        first: dict[str, str] = {}  # object id -> the first file of this run that held it
        files: list[ImageRecord] = []  # every readable file: the folder's file rows
        records: list[ImageRecord] = []
        vectors: list[np.ndarray] = []
        items = embed_folder(
            image_dir,
            paths,
            chosen,
            batch=batch,
            id_mode=id_mode,
            known=lambda oid: oid in stored or oid in first,
        )
        for item in items:
            if item.error is not None or item.record is None:
                report.unreadable.append(item.error or item.path)
                progress.note(f"skipped: {item.error}")
                continue
            record = item.record
            files.append(ImageRecord(record.object_id, record.path, record.bytes))
            if record.object_id in first:
                report.duplicates.append(f"{record.path} (same bytes as {first[record.object_id]})")
                progress.note(f"duplicate: {report.duplicates[-1]}")
            elif item.skipped == "known" or record.object_id in stored:
                report.known += 1
            else:
                assert item.vector is not None
                records.append(record)
                vectors.append(item.vector)
                if len(records) >= chunk:
                    _load(conn, fs, records, vectors, report)
                    records, vectors = [], []
            first.setdefault(record.object_id, str(record.path))
            added = report.added + len(records)
            progress.update(
                f"{name}: {item.index + 1:,}/{report.files:,} files, {added:,} added, "
                f"{rate(added, time.perf_counter() - started)} images/s"
            )
        if records:
            _load(conn, fs, records, vectors, report)
        with conn.transaction():
            images.record_files(conn, root, files)
            _forget_gone(conn, fs, root, paths, prune, report)
        progress.clear()
        report.seconds = time.perf_counter() - started
        if report.added or report.pruned_rows:
            feature_sets.analyze(conn)
        report.total_rows = feature_sets.row_count(conn, fs)
        fs = feature_sets.feature_set(conn, name) or fs
        if build_index and report.added:
            report.index_built = hnsw.auto_build(conn, fs, report.total_rows, progress)
    return report


def _model_for(
    fs: FeatureSet | None,
    model: str | None,
    overrides: Overrides | None,
    decode: str | None,
    alpha: str | None = None,
) -> Model:
    """A new feature set's model as asked; an existing one's as recorded, and nothing else."""
    if fs is None:
        return embedding_model(model, overrides, decode, alpha=alpha)
    if fs.model is None:
        raise FeatureSetError(
            f"feature set {fs.name!r} has no model recorded (it was ingested from shards); "
            "expected a feature set made by `simsearch index`, or a new --feature-set name"
        )
    if model is None and decode is None and alpha is None:
        recorded = embedding_model(fs.model, overrides)
        recorded = recorded.with_preprocess(Preprocess.from_dict(fs.preprocess))
    else:
        recorded = embedding_model(model or fs.model, overrides, decode, alpha=alpha)
        if recorded.preprocess.to_dict() != Preprocess.from_dict(fs.preprocess).to_dict():
            raise FeatureSetError(
                f"feature set {fs.name!r} was made with other preprocessing; expected the same "
                "options as before (or a new --feature-set name)"
            )
    if fs.model_sha256 and recorded.sha256 != fs.model_sha256:
        raise FeatureSetError(
            f"feature set {fs.name!r} was made with {fs.model} of sha256 {fs.model_sha256[:12]}…; "
            f"{recorded.path} has sha256 {recorded.sha256[:12]}… (use a new --feature-set name)"
        )
    return recorded


def _forget_gone(
    conn: Connection,
    fs: FeatureSet,
    root: str,
    present: list[str],
    prune: bool,
    report: IndexReport,
) -> None:
    """Count the files recorded under ``root`` that are gone; with ``prune`` forget them, and
    remove from the feature set every image no file in its folders holds any more (gone, or
    rewritten in place with other bytes)."""
    listed = set(present)
    gone = [path for path in images.recorded_files(conn, root) if path not in listed]
    report.gone = len(gone)
    if not prune:
        return
    if gone:
        images.forget_files(conn, root, gone)
    report.pruned = len(gone)
    report.pruned_rows = images.delete_objects(conn, images.unheld(conn, fs), fs).embeddings


def _probe_dimension(model: Model) -> int:
    """The output size of a model that leaves it symbolic: run it once on a blank image."""
    return int(model.run(np.zeros(model.preprocess.input_shape(), np.float32)).shape[1])


def _load(
    conn: Connection,
    fs: FeatureSet,
    records: list[ImageRecord],
    vectors: list[np.ndarray],
    report: IndexReport,
) -> None:
    ids = [r.object_id for r in records]
    features = np.ascontiguousarray(np.stack(vectors), dtype=np.float32)
    digest = hashlib.sha256()
    digest.update("\n".join(ids).encode())
    digest.update(features.tobytes())
    sha256 = digest.hexdigest()
    # The ledger wants a name per load; the content hash makes it unique and self-describing.
    shard = Shard(f"index-{sha256[:16]}", ids, features, sha256)
    with conn.transaction():  # metadata and vectors land together (load_shard nests inside)
        images.upsert_images(conn, records)
        # Rows of a set with a PCA projection get their reduced copy now; others when it is fitted.
        projection = projections.load(conn, fs)
        reduced = None if projection is None else projection.apply(features)
        ledger.load_shard(conn, fs, shard, replace=False, reduced=reduced)
    report.added += len(records)
