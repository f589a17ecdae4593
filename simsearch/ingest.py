"""``simsearch ingest``: feature shards from a directory into a feature set, shard by shard.

Every shard is checked before anything is written, so a bad file costs one line and leaves the
database as it was. Each shard then loads in its own transaction together with its ledger row:
a crash leaves whole shards only, and a re-run skips what the ledger holds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config
from .db import connect, feature_sets, hnsw, ledger, projections
from .db.feature_sets import Connection, FeatureSet
from .errors import ShardError, SimsearchError
from .model import Model, Overrides, load_model
from .progress import Progress, plural, rate
from .projection import Projection, wanted
from .shards import Shard, ShardFiles, list_shards, read_shard, shard_sha256


@dataclass
class IngestReport:
    feature_set: str
    loaded: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    index_built: bool = False
    total_rows: int = 0

    def summary(self) -> str:
        written = len(self.loaded) + len(self.replaced)
        parts = [
            f"{self.feature_set}: loaded {plural(written, 'shard')} "
            f"({plural(self.rows, 'row')}) in {self.seconds:.1f} s "
            f"({rate(self.rows, self.seconds)} rows/s)"
        ]
        if self.replaced:
            parts.append(f"replaced {len(self.replaced)}")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} already loaded")
        if self.problems:
            parts.append(f"{plural(len(self.problems), 'problem')} reported")
        if self.index_built:
            parts.append("built the HNSW index")
        parts.append(f"{plural(self.total_rows, 'row')} in all")
        return "; ".join(parts)


def ingest(
    feature_dir: Path,
    feature_set: str | None = None,
    model: str | None = None,
    replace: bool = False,
    overrides: Overrides | None = None,
    progress: Progress | None = None,
    build_index: bool = True,
) -> IngestReport:
    """Load every shard of ``feature_dir`` into ``feature_set`` (default: the directory's name)."""
    progress = progress or Progress(enabled=False)
    listing = list_shards(feature_dir)
    name = feature_set or feature_dir.resolve().name
    report = IngestReport(feature_set=name, problems=listing.problems())
    for line in report.problems:
        progress.note(f"warning: {line}")
    if not listing.shards:
        raise ShardError(f"{feature_dir}: no complete shard (each needs ids and features files)")
    chosen_model = _chosen_model(feature_dir, model, overrides)

    with connect.connect() as conn:
        fs = feature_sets.feature_set(conn, name)
        dimension = fs.dimension if fs else None
        loaded = ledger.loaded_shards(conn, fs) if fs else {}
        pending = _check_all(conn, fs, listing.shards, loaded, dimension, replace, progress, report)
        if dimension is None:
            dimension = _dimension_of(pending[0] if pending else listing.shards[0])
        if chosen_model is not None:
            chosen_model.check_dimension(dimension, name)
        if fs is None:
            fs = feature_sets.create(conn, name, dimension, *_model_record(chosen_model))
        elif chosen_model is not None and chosen_model.ref != fs.model:
            feature_sets.set_model(conn, fs, *_model_record(chosen_model))  # type: ignore[arg-type]

        adding = sum(_rows_in(files) for files in pending)
        rebuild = hnsw.rebuild_params(conn, fs, adding) if build_index else None
        if rebuild is not None:
            progress.note("dropping the HNSW index for the load; it is rebuilt afterwards")
            hnsw.drop(conn, fs)

        projection = _projection(conn, fs, pending, adding)
        try:
            _load_all(conn, fs, pending, replace, progress, report, projection)
        except SimsearchError:
            if rebuild is not None:  # leave the feature set indexed, as it was before the load
                progress.note("a shard failed; rebuilding the HNSW index dropped for the load ...")
                hnsw.build(conn, fs, *rebuild, if_missing=True)
            raise
        progress.clear()
        report.seconds = progress.elapsed

        written = bool(report.loaded or report.replaced)
        if written:
            feature_sets.analyze(conn)
        report.total_rows = feature_sets.row_count(conn, fs)
        fs = feature_sets.feature_set(conn, name) or fs
        if rebuild is not None and not fs.indexed:
            m, efc = rebuild
            progress.note(f"rebuilding the HNSW index on {report.total_rows:,} rows ...")
            report.index_built = hnsw.build(conn, fs, m, efc, if_missing=True)
        elif build_index and written:
            report.index_built = hnsw.auto_build(conn, fs, report.total_rows, progress)
    return report


def _load_all(
    conn: Connection,
    fs: FeatureSet,
    pending: list[ShardFiles],
    replace: bool,
    progress: Progress,
    report: IngestReport,
    projection: Projection | None,
) -> None:
    # Read (and project) the next shard in a thread while the server stores this one: file
    # reading, hashing and the PCA product overlap the COPY. At most two shards are in memory.
    def prepare(files: ShardFiles) -> tuple[Shard, np.ndarray | None]:
        shard = read_shard(files, fs.dimension)
        return shard, None if projection is None else projection.apply(shard.features)

    with ThreadPoolExecutor(max_workers=1) as reader:
        ahead = reader.submit(prepare, pending[0]) if pending else None
        for number, files in enumerate(pending, 1):
            assert ahead is not None
            shard, reduced = ahead.result()
            ahead = reader.submit(prepare, pending[number]) if number < len(pending) else None
            progress.update(
                f"shard {number}/{len(pending)} ({files.name}): {report.rows:,} rows, "
                f"{rate(report.rows, progress.elapsed)} rows/s",
                force=True,
            )
            outcome = ledger.load_shard(conn, fs, shard, replace, reduced)
            _record(report, shard, outcome)
            del shard, reduced


def _projection(
    conn: Connection, fs: FeatureSet, pending: list[ShardFiles], adding: int
) -> Projection | None:
    """The feature set's PCA projection for the rows about to be stored: its own, or one fitted
    now from the first shards when this load makes a high-dimensional set large enough for an
    index, so that no row needs its reduced copy made afterwards (see simsearch/projection.py).
    """
    if projections.decided(conn, fs) or not pending or not wanted(fs.dimension):
        return projections.load(conn, fs)
    if feature_sets.row_count(conn, fs) + adding < hnsw.AUTO_INDEX_ROWS:
        return None
    sample: list[np.ndarray] = []
    for files in pending:
        sample.append(read_shard(files, fs.dimension).features)
        if sum(len(block) for block in sample) >= config.PROJECTION_SAMPLE:
            break
    return projections.ensure(conn, fs, np.concatenate(sample)[: config.PROJECTION_SAMPLE])


def _rows_in(files: ShardFiles) -> int:
    # The header only: the shard was validated by _check_all already.
    return int(np.load(files.features_path, mmap_mode="r", allow_pickle=False).shape[0])


def _check_all(
    conn: Connection,
    fs: FeatureSet | None,
    shards: list[ShardFiles],
    loaded: dict[str, str],
    dimension: int | None,
    replace: bool,
    progress: Progress,
    report: IngestReport,
) -> list[ShardFiles]:
    """Validate every shard that is to be written, before writing any."""
    pending: list[ShardFiles] = []
    seen: dict[str, str] = {}  # object id -> shard, across the shards of this load
    for number, files in enumerate(shards, 1):
        progress.update(f"checking shard {number}/{len(shards)} ({files.name})")
        sha256 = shard_sha256(files)
        if loaded.get(files.name) == sha256:
            report.skipped.append(files.name)
            continue
        if files.name in loaded and not replace:
            raise ShardError(
                f"shard {files.name}: its files changed since they were loaded into "
                f"{report.feature_set!r}; use --replace to load the new contents"
            )
        shard = read_shard(files, dimension)
        dimension = shard.dimension
        for object_id in shard.object_ids:
            other = seen.setdefault(object_id, files.name)
            if other != files.name:
                raise ShardError(
                    f"{files.ids_path}: object id {object_id!r} also appears in shard {other}; "
                    "expected ids unique across shards"
                )
        if fs is not None:
            ledger.refuse_stored_ids(conn, fs, shard)
        pending.append(files)
    if report.skipped:
        progress.note(
            f"skipped {plural(len(report.skipped), 'shard')} already loaded with the same contents"
        )
    return pending


def _chosen_model(
    feature_dir: Path, model: str | None, overrides: Overrides | None
) -> Model | None:
    """The model named, else the one `simsearch embed` recorded in the directory (simsearch.json).

    The manifest's preprocessing wins when it names the same model file, since it is what the
    features were made with (e.g. JPEG draft decoding).
    """
    from .manifest import manifest_model, read_manifest

    manifest = read_manifest(feature_dir)
    if model is None:
        return None if manifest is None else manifest_model(manifest, feature_dir)
    chosen = load_model(model, overrides)
    if manifest is not None and manifest.model_sha256 == chosen.sha256:
        return chosen.with_preprocess(manifest_model(manifest, feature_dir).preprocess)
    return chosen


def _dimension_of(files: ShardFiles) -> int:
    return read_shard(files).dimension


def _model_record(model: Model | None) -> tuple[str | None, str | None, dict[str, object]]:
    if model is None:
        return None, None, {}
    return model.ref, model.sha256, model.preprocess.to_dict()


def _record(report: IngestReport, shard: Shard, outcome: str) -> None:
    if outcome == "skipped":  # another ingest loaded it meanwhile
        report.skipped.append(shard.name)
        return
    (report.replaced if outcome == "replaced" else report.loaded).append(shard.name)
    report.rows += shard.rows
