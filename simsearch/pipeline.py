"""Image files to feature vectors, fast: decoding in a thread pool, overlapped with inference.

Pillow releases the GIL while it decodes and resizes, and onnxruntime while it runs, so threads
keep every core busy without the cost of processes (no pickling of pixel arrays). At most a few
batches are decoded ahead of the model, so memory stays bounded on any folder size. Results come
back in input order, which makes shards deterministic.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import config
from .errors import ImageError, InputError
from .gallery import ImageRecord, object_id
from .model import BUILTIN_PREFIX, Model, Overrides, load_model
from .preprocess import ALPHA_MODES, decode_image, draft_size, image_to_array

DECODE_MODES = ("draft", "full")
# Threads onnxruntime runs a batch on while the pool decodes the next (None: its default, every
# core, spinning). On an idle 2-core machine the default embeds 78-81 images/s end to end
# against 48-60 with one thread; with other work on the machine one thread starves the
# decoders less. Measured by bench/bench_embed.py; see docs/benchmarks.md.
INFERENCE_THREADS: int | None = None


@dataclass(frozen=True)
class Embedded:
    """What became of one input file: a record and its vector, or why it was left out."""

    index: int  # position in the input
    path: str  # relative path
    record: ImageRecord | None = None
    vector: np.ndarray | None = None
    skipped: str | None = None  # "known": the id is stored already (record, no vector)
    error: str | None = None  # why the file could not be read


@dataclass(frozen=True)
class _Decoded:
    record: ImageRecord
    array: np.ndarray


def embedding_model(
    ref: str | None,
    overrides: Overrides | None = None,
    decode: str | None = None,
    inference_threads: int | None = INFERENCE_THREADS,
    alpha: str | None = None,
) -> Model:
    """The model to embed a folder with, and its preprocessing.

    ``decode`` is "draft" (JPEGs decoded at reduced scale, much faster), "full" (every pixel, as
    the origin did) or None: draft for the built-in model, full for the user's own models, whose
    features may need to match ones made elsewhere with the origin's preprocessing. ``alpha`` is
    likewise "white" (transparent images composited onto white) or "drop" (the origin's
    ``convert("RGB")``), or None: white for the built-in model, drop for the user's own.
    """
    model = load_model(ref, overrides)
    builtin = model.ref.startswith(BUILTIN_PREFIX)
    if decode is None:
        decode = "draft" if builtin else "full"
    if decode not in DECODE_MODES:
        raise InputError(f"decode must be one of {', '.join(DECODE_MODES)}, not {decode!r}")
    alpha = alpha or ("white" if builtin else "drop")
    if alpha not in ALPHA_MODES:
        raise InputError(f"alpha must be one of {', '.join(ALPHA_MODES)}, not {alpha!r}")
    chosen = replace(model.preprocess, draft=decode == "draft", alpha=alpha)
    if model.preprocess != chosen:
        model = model.with_preprocess(chosen)
    if inference_threads is not None:
        model = model.with_threads(inference_threads)
    return model


def embed_folder(
    folder: Path,
    paths: Iterable[str],
    model: Model,
    *,
    batch: int = config.BATCH,
    id_mode: str = "sha1",
    known: Callable[[str], bool] = lambda object_id: False,
    workers: int | None = None,
) -> Iterator[Embedded]:
    """One ``Embedded`` per path (relative to ``folder``), in the order given.

    Files whose id ``known`` accepts are read (to hash them) but neither decoded nor embedded.
    """
    workers = workers or os.cpu_count() or 2
    spec = model.preprocess
    draft = draft_size(spec)

    def prepare(index: int, relative: str) -> Embedded | _Decoded:
        full = folder / relative
        try:
            data = full.read_bytes()
        except OSError as exc:
            return Embedded(index, relative, error=f"{full}: cannot be read ({exc.strerror})")
        oid = object_id(relative, data, id_mode)
        if known(oid):  # the record says which file it is; there is no vector
            return Embedded(index, relative, ImageRecord(oid, relative, len(data)), skipped="known")
        try:
            image, (width, height) = decode_image(
                full, spec.exif_transpose, draft, data, spec.alpha
            )
            array = image_to_array(image, spec)
        except ImageError as exc:
            return Embedded(index, relative, error=str(exc))
        return _Decoded(ImageRecord(oid, relative, len(data), width, height), array)

    ahead = max(batch * 3, workers * 2)  # decoded images waiting for the model, at most
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        inflight: deque[tuple[int, str, Future[Embedded | _Decoded]]] = deque()
        waiting: list[tuple[int, str, Embedded | _Decoded]] = []  # in order, since the last batch
        decoded = 0
        source = enumerate(paths)
        exhausted = False
        try:
            while True:
                while not exhausted and len(inflight) < ahead:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    index, relative = item
                    inflight.append((index, relative, pool.submit(prepare, index, relative)))
                if not inflight:
                    break
                index, relative, future = inflight.popleft()
                outcome = future.result()
                waiting.append((index, relative, outcome))
                decoded += isinstance(outcome, _Decoded)
                if decoded >= batch or (exhausted and not inflight):
                    yield from _run_batch(model, waiting)
                    waiting, decoded = [], 0
            yield from _run_batch(model, waiting)
        finally:
            for _, _, future in inflight:
                future.cancel()


def _run_batch(
    model: Model, waiting: list[tuple[int, str, Embedded | _Decoded]]
) -> Iterator[Embedded]:
    arrays = [o.array for _, _, o in waiting if isinstance(o, _Decoded)]
    vectors = iter(model.run(np.stack(arrays))) if arrays else iter(())
    for index, relative, outcome in waiting:
        if isinstance(outcome, _Decoded):
            yield Embedded(index, relative, record=outcome.record, vector=next(vectors))
        else:
            yield outcome
