"""Embedding throughput: image files to feature vectors with the default model, images/s.

Realistic input: scikit-image's sample photos upscaled to about 2 MP (1728x1152 or 1152x1728),
cropped and noised so that no two files are alike, saved as JPEG quality 90 (about
0.4 MB each). Each lever is measured on its own, round-robin (every case once per round, so
that load from other work on a shared machine falls on all cases alike):

- serial: ``Model.embed_files`` batch after batch (no thread pool), full or draft decoding
- the pipeline (``simsearch.pipeline.embed_folder``): decoding in a thread pool overlapped
  with inference; with onnxruntime's default session (every core, spinning) or the pipeline's
  own (fewer threads, no spinning); with 1, 2 or 3 decode threads; at batches 8, 32, 64
- each stage alone: decode+resize on one thread; inference alone
- end to end: ``embed`` (files to shards) and ``index`` (files into PostgreSQL), in-process

Run:  python bench/bench_embed.py [--images 128] [--repeats 5] [--write] [--workdir DIR]
``--write`` replaces the "## Embedding throughput" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Embedding throughput"


def make_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` distinct ~2 MP JPEG photos (quality 90) made from scikit-image's samples."""
    from simsearch.demo import COLOUR_PHOTOS, sample_photos

    photos = sample_photos()
    sources = [photos[name] for name in COLOUR_PHOTOS]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo{i:05d}.jpg"
        paths.append(path)
        if path.exists():  # a --workdir from an earlier run: the same photos
            continue
        rng = np.random.default_rng([seed, i])  # each photo on its own: reproducible alone
        source = Image.fromarray(sources[i % len(sources)])
        # A random 70-100% crop, so that every file differs in content, not just in noise.
        w, h = source.size
        cw, ch = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.7, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        size = (1728, 1152) if i % 3 else (1152, 1728)  # 2.0 MP, landscape and portrait
        image = source.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(image, np.float32) + rng.normal(0, 4, (size[1], size[0], 3))
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        path.write_bytes(buffer.getvalue())
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory")
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only the cases whose label contains TEXT (repeatable); e.g. 'end to end'",
    )
    args = parser.parse_args(argv)

    from simsearch.pipeline import INFERENCE_THREADS, embed_folder, embedding_model

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        folder = work / "photos"
        started = time.perf_counter()
        paths = make_photos(folder, args.images)
        megapixels = np.mean([np.prod(Image.open(p).size) for p in paths]) / 1e6
        mbytes = np.mean([p.stat().st_size for p in paths]) / 1e6
        print(
            f"{len(paths)} photos, {megapixels:.1f} MP, {mbytes:.2f} MB each "
            f"(made in {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        relative = [p.name for p in paths]
        # "ort" is onnxruntime's default session (every core, spinning); "ort1" is what the
        # pipeline uses: INFERENCE_THREADS threads, no spinning.
        full = embedding_model(None, decode="full", inference_threads=None)
        draft = embedding_model(None, decode="draft", inference_threads=None)
        draft1 = embedding_model(None, decode="draft")
        threads = INFERENCE_THREADS
        for model in (full, draft1):
            model.run(np.zeros((1, 224, 224, 3), np.float32))  # warm the sessions up

        def serial(model):  # type: ignore[no-untyped-def]
            def run() -> int:
                for start in range(0, len(paths), 32):
                    model.embed_files(paths[start : start + 32])
                return len(paths)

            return run

        def pipeline(model, batch: int = 32, workers: int | None = None):  # type: ignore[no-untyped-def]
            def run() -> int:
                items = embed_folder(folder, relative, model, batch=batch, workers=workers)
                return sum(item.vector is not None for item in items)

            return run

        rows: list[tuple[str, float, list[float], float]] = []
        cases: list[tuple[str, Callable[[], int]]] = [
            ("serial, full decode, ort default (no lever)", serial(full)),
            ("serial, draft decode, ort default", serial(draft)),
            ("2 decode threads + overlap, full decode, ort default", pipeline(full)),
            ("2 decode threads + overlap, draft decode, ort default", pipeline(draft)),
            (
                f"2 decode threads + overlap, draft, ort {threads} thread no spin [default]",
                pipeline(draft1),
            ),
            (
                f"1 decode thread + overlap, draft, ort {threads} no spin",
                pipeline(draft1, workers=1),
            ),
            (
                f"3 decode threads + overlap, draft, ort {threads} no spin",
                pipeline(draft1, workers=3),
            ),
            ("default pipeline, batch 8", pipeline(draft1, 8)),
            ("default pipeline, batch 64", pipeline(draft1, 64)),
            *_parts(paths, full, draft1),
            *_end_to_end(folder, work),
        ]
        if threads != 2:
            draft2 = embedding_model(None, decode="draft", inference_threads=2)
            cases.insert(7, ("2 decode threads + overlap, draft, ort 2 no spin", pipeline(draft2)))
        if args.only:
            cases = [(label, run) for label, run in cases if any(t in label for t in args.only)]
        # Round-robin: every case once per round, so that load from other work on the machine
        # falls on all of them alike rather than on whichever ran while it peaked.
        # CPU time per image (all of this process's threads) hardly depends on the load that
        # other work puts on the machine, unlike wall time: cores / CPU time is the ceiling a
        # pipeline that keeps every core busy reaches on an idle machine.
        rates: dict[str, list[float]] = {label: [] for label, _ in cases}
        cpu: dict[str, list[float]] = {label: [] for label, _ in cases}
        load = os.getloadavg()[0]
        for round_ in range(args.repeats):
            for label, run in cases:
                started, cpu_started = time.perf_counter(), time.process_time()
                count = run()
                rates[label].append(count / (time.perf_counter() - started))
                cpu[label].append((time.process_time() - cpu_started) * 1000 / max(count, 1))
            print(f"round {round_ + 1}/{args.repeats} done", flush=True)
        load = (load + os.getloadavg()[0]) / 2
        for label, _ in cases:
            rows.append(
                (
                    label,
                    statistics.median(rates[label]),
                    rates[label],
                    statistics.median(cpu[label]),
                )
            )
            print(
                f"  {label:<64} {rows[-1][1]:6.1f} images/s {rows[-1][3]:6.1f} CPU ms/image",
                flush=True,
            )

    cores = os.cpu_count()
    lines = _section(rows, len(paths), megapixels, mbytes, cores, args.repeats, load)
    print("\n".join(lines))
    if args.write:
        _write_section(lines)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


def _parts(paths, full, pipeline_model) -> list[tuple[str, Callable[[], int]]]:  # type: ignore[no-untyped-def]
    """Decoding alone (one thread) and inference alone: what each stage costs by itself."""
    from simsearch.preprocess import load_batch

    def decode(spec):  # type: ignore[no-untyped-def]
        def run() -> int:
            for start in range(0, len(paths), 32):
                load_batch(paths[start : start + 32], spec)
            return len(paths)

        return run

    batch = np.zeros((32, 224, 224, 3), np.float32)
    rounds = max(1, len(paths) // 32)

    def infer(model):  # type: ignore[no-untyped-def]
        def run() -> int:
            for _ in range(rounds):
                model.run(batch)
            return rounds * 32

        return run

    return [
        ("decode+resize only, full, 1 thread", decode(full.preprocess)),
        ("decode+resize only, draft, 1 thread", decode(pipeline_model.preprocess)),
        ("inference only (batch 32), ort default", infer(full)),
        ("inference only (batch 32), ort pipeline session", infer(pipeline_model)),
    ]


def _end_to_end(folder: Path, work: Path) -> list[tuple[str, Callable[[], int]]]:
    """The commands as users run them (in-process): files to shards, files to the database."""
    os.environ.setdefault("SIMSEARCH_HOME", str(work / "home"))
    from simsearch.db import connect, feature_sets
    from simsearch.embed import embed
    from simsearch.indexing import index

    runs = iter(range(1_000_000))  # feature set names

    def run_embed() -> int:
        out = Path(tempfile.mkdtemp(prefix="shards", dir=work))
        try:
            return embed(folder, out).images
        finally:
            shutil.rmtree(out)

    def run_index() -> int:
        name = f"bench-embed-{next(runs)}"
        report = index(folder, feature_set=name, build_index=False)
        with connect.connect() as conn:
            fs = feature_sets.feature_set(conn, name)
            if fs is not None:
                with conn.transaction():
                    conn.execute("DELETE FROM feature_sets WHERE id = %s", [fs.id])
        return report.added

    with connect.connect():
        pass  # start the server before timing
    return [
        ("simsearch embed (end to end, to shards)", run_embed),
        ("simsearch index (end to end, into PostgreSQL)", run_index),
    ]


def _section(rows, count, megapixels, mbytes, cores, repeats, load) -> list[str]:  # type: ignore[no-untyped-def]
    import onnxruntime
    import PIL

    table = [
        "| pipeline | images/s (median) | runs | CPU ms/image | ceiling on idle cores, images/s |",
        "|---|---:|---|---:|---:|",
    ]
    table += [
        f"| {label} | {median:.1f} | {', '.join(f'{r:.0f}' for r in rates)} | {cpu:.1f} "
        f"| {(cores or 1) * 1000 / cpu:.0f} |"
        for label, median, rates, cpu in rows
    ]
    by = {label.split(" [")[0]: (median, cpu) for label, median, _, cpu in rows}

    def ratio(a: str, b: str, column: int = 0) -> str:
        x, y = (by.get(a), by.get(b))
        if x is None or y is None:
            return "-"
        return f"{x[column] / y[column]:.1f}x" if column == 0 else f"{y[column] / x[column]:.1f}x"

    default = next((k for k in by if k.startswith("2 decode threads + overlap, draft, ort 1")), "")
    none = "serial, full decode, ort default (no lever)"
    pool_full = "2 decode threads + overlap, full decode, ort default"
    pool_draft = "2 decode threads + overlap, draft decode, ort default"
    dec_draft, dec_full = (
        "decode+resize only, draft, 1 thread",
        "decode+resize only, full, 1 thread",
    )
    notes = [
        "Levers, side by side (wall-clock ratios from the same rounds):",
        "",
        f"- JPEG draft decoding, decode+resize alone: {ratio(dec_draft, dec_full)} "
        f"({ratio(dec_draft, dec_full, 1)} less CPU per image)",
        f"- decoding in a thread pool overlapped with inference (full decoding): "
        f"{ratio(pool_full, none)}",
        f"- draft decoding on top, in the pipeline: {ratio(pool_draft, pool_full)}",
        "- the pipeline's own onnxruntime session (1 thread, no spinning) instead of the default "
        f"(every core, spinning): {ratio(default, pool_draft)} "
        f"({ratio(default, pool_draft, 1)} less CPU per image)",
        f"- all levers against none: {ratio(default, none)}",
        "",
    ]
    return [
        HEADING,
        "",
        f"`python bench/bench_embed.py --images {count} --repeats {repeats}`: the default model "
        f"(EfficientNet-Lite0, 224x224) on {count} JPEG photos of {megapixels:.1f} MP "
        f"({mbytes:.2f} MB each, quality 90), {cores} cores, Python {platform.python_version()}, "
        f"Pillow {PIL.__version__}, onnxruntime {onnxruntime.__version__}. Median of {repeats} "
        f"rounds, cases interleaved. Load average while measuring: {load:.1f} (other work shared "
        "the machine), so wall-clock rows compare side by side only; CPU ms per image (all "
        "threads of the process) depends little on that load, and cores / CPU time is what a "
        "pipeline that keeps every core busy reaches on an idle machine.",
        "",
        *table,
        "",
        *notes,
    ]


def _write_section(lines: list[str]) -> None:
    """Replace (or add) only this section; other sections belong to other benchmarks."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    start = text.find(HEADING + "\n")
    section = "\n".join(lines)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + ("" if end < 0 else text[end + 1 :])
    DOC.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
