"""``simsearch duplicates`` at scale: 100,000 images' vectors grouped, with time, memory and
the recall of the candidate search.

Run:  python -m bench.bench_duplicates --rows 100000      # about 10 minutes on 2 cores
      python -m bench.bench_duplicates --rows 3000 --dimension 64 --no-doc   # the tests' size

The data looks like a photo collection with copies: "photos" are drawn as bench/datagen.py
draws them (clustered, low-rank, non-negative like pooled CNN features; a photo's nearest other
photo is about 17 away, and unrelated photos of the shipped model are 17-21 apart); 30% of them
have one to four copies, each moved from its photo in a random direction by a distance drawn
like the real edited copies of the calibration (median 2.5, most between 0.5 and 8). The truth
(which pairs lie within the radius) is known from the generator, so the benchmark also measures
the recall of the batched HNSW search.

Steps: write shards, ``simsearch ingest`` them (HNSW index built), then time ``simsearch
duplicates --max-distance D --json`` as a child process (wall time and its own peak RSS), once
from scratch, once again with nothing new (incremental), and once after 1% new images. Files
are not read (the vectors have none): this is the vectors' part of the work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import datagen
from .measure import machine, run_child

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Duplicates"
RADIUS = 10.25  # the loose level's radius: the widest search the calibrated levels make
SEED = 20_261_201


def generate(
    rows: int, dimension: int, seed: int = SEED
) -> tuple[list[str], np.ndarray, list[int]]:
    """Ids, vectors and each row's photo number (copies share their photo's number)."""
    rng = np.random.default_rng(seed)
    labels: list[int] = []
    photo = 0
    while len(labels) < rows:
        copies = int(rng.integers(1, 5)) if rng.random() < 0.3 else 0
        labels.extend([photo] * (1 + copies))
        photo += 1
    labels = labels[:rows]
    # Photos as bench/datagen.py draws them: clustered, low-rank, non-negative (i.i.d. random
    # vectors would be a test of the curse of dimensionality, not of an index). Scaled so that
    # a photo's nearest other photo is about 17 away at any dimension, as at 1280.
    spec = datagen.Spec(photo, dimension, 10_000, clusters=max(photo // 100, 10), seed=seed)
    photos = datagen.Generator(spec).draw(rng, photo) * np.float32(np.sqrt(1280 / dimension))
    vectors = photos[labels]
    first = np.r_[True, np.diff(labels) != 0]  # the photo itself; the rest are its copies
    moved = np.flatnonzero(~first)
    direction = rng.standard_normal((len(moved), dimension)).astype(np.float32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    distance = np.clip(rng.lognormal(np.log(2.5), 0.6, len(moved)), 0.3, 12.0).astype(np.float32)
    vectors[moved] += direction * distance[:, None]
    ids = [f"{i:08d}.jpg" for i in range(rows)]
    return ids, np.ascontiguousarray(vectors), labels


def true_pairs(vectors: np.ndarray, labels: list[int], radius: float) -> set[tuple[str, str]]:
    """Pairs of copies of one photo within ``radius`` (unrelated photos are far beyond it)."""
    found: set[tuple[str, str]] = set()
    start = 0
    for end in range(1, len(labels) + 1):
        if end < len(labels) and labels[end] == labels[start]:
            continue
        for i in range(start, end):
            for j in range(i + 1, end):
                if float(np.linalg.norm(vectors[i] - vectors[j])) <= radius:
                    found.add((f"{i:08d}.jpg", f"{j:08d}.jpg"))
        start = end
    return found


def write_shards(
    folder: Path, ids: list[str], vectors: np.ndarray, shard_rows: int, first: int = 0
) -> None:
    """Shards in the origin's format, numbered from ``first`` (the ledger keys on names)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, len(ids), shard_rows), first):
        np.save(folder / f"{n:04d}.features.npy", vectors[start : start + shard_rows])
        np.save(folder / f"{n:04d}.object_ids.npy", np.array(ids[start : start + shard_rows]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_duplicates")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=1280)
    parser.add_argument("--home", type=Path, default=None, help="SIMSEARCH_HOME (a fresh one)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true", help="print the figures only")
    parser.add_argument("--note", default="", help="a sentence on the conditions (load)")
    parser.add_argument(
        "--render", type=Path, metavar="LOG", help="only write the doc from an earlier run's output"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        text = args.render.read_text()
        figures = json.loads(text[text.index("{\n") :])
        figures["load"] = tuple(figures["load"])
        _write_doc(args.doc, render(figures))
        return 0
    home = (args.home or args.data / f"home-dup-{args.rows}").resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMSEARCH_")}
    env["SIMSEARCH_HOME"] = str(home)
    os.environ.update(env)
    os.environ.pop("SIMSEARCH_DATABASE_URL", None)

    new = max(args.rows // 100, 10)
    ids, vectors, labels = generate(args.rows + new, args.dimension)
    base = args.rows
    truth = true_pairs(vectors[:base], labels[:base], RADIUS)
    folder = args.data / f"dup-{args.rows}x{args.dimension}"
    extra = args.data / f"dup-{args.rows}x{args.dimension}-new"
    write_shards(folder, ids[:base], vectors[:base], 10_000)
    write_shards(extra, ids[base:], vectors[base:], 10_000, first=9000)
    del vectors
    print(f"machine: {machine()}", flush=True)

    figures: dict[str, object] = {"rows": base, "dimension": args.dimension, "radius": RADIUS}
    figures["load_s"] = _cli(env, "ingest", folder, "--feature-set", "dup", "--no-index")["seconds"]
    figures["index_s"] = _cli(env, "index-build", "--feature-set", "dup")["seconds"]
    first = _duplicates(env)
    figures["first"] = first
    figures["recall"] = _recall(truth)
    figures["true_pairs"] = len(truth)
    figures["again"] = _duplicates(env)
    _cli(env, "ingest", extra, "--feature-set", "dup")
    figures["incremental"] = _duplicates(env)
    figures["new_rows"] = len(ids) - base
    figures["machine"] = machine()
    figures["load"] = os.getloadavg()
    figures["note"] = args.note
    print(json.dumps(figures, indent=1, default=str))
    if not args.no_doc:
        _write_doc(args.doc, render(figures))
    return 0


def _cli(env: dict[str, str], *args: object) -> dict[str, float]:
    run = run_child([sys.executable, "-m", "simsearch", *map(str, args)], env=env)
    if run.code != 0:
        raise SystemExit(f"simsearch {' '.join(map(str, args))} failed: {run.err[-2000:]}")
    print(f"simsearch {' '.join(map(str, args))}: {run.seconds:.1f} s", flush=True)
    return {"seconds": run.seconds, "rss_mib": run.max_rss_mib, "out": run.out, "err": run.err}  # type: ignore[dict-item]


def _duplicates(env: dict[str, str]) -> dict[str, object]:
    started = time.perf_counter()
    run = _cli(env, "duplicates", "--feature-set", "dup", "--max-distance", RADIUS, "--json")
    groups = json.loads(str(run["out"]))["groups"]
    return {
        "seconds": run["seconds"],
        "wall_s": time.perf_counter() - started,
        "rss_mib": run["rss_mib"],
        "groups": len(groups),
        "members": sum(len(g["members"]) for g in groups),
        "summary": str(run["err"]).strip().splitlines()[-1],
    }


def _recall(truth: set[tuple[str, str]]) -> float:
    """Share of the true pairs within the radius that the candidate search stored."""
    from simsearch.db import connect

    with connect.connect() as conn:
        rows = conn.execute(
            """SELECT a, b FROM duplicate_pairs p JOIN feature_sets f ON f.id = p.feature_set_id
               WHERE f.name = 'dup' AND distance <= %s""",
            [RADIUS],
        ).fetchall()
    found = {(a, b) for a, b in rows}
    return len(found & truth) / len(truth) if truth else 1.0


def render(f: dict[str, object]) -> str:
    first, again, inc = f["first"], f["again"], f["incremental"]
    assert isinstance(first, dict) and isinstance(again, dict) and isinstance(inc, dict)
    rows = int(f["rows"])  # type: ignore[call-overload]
    rate = rows / float(first["seconds"])
    load = f["load"]
    assert isinstance(load, tuple)
    lines = [
        HEADING,
        "",
        f"`python -m bench.bench_duplicates --rows {rows}`: {rows:,} x {f['dimension']} vectors "
        "of photos and their copies (30% of photos have 1-4 copies at the distances of real "
        "edited copies), grouped by `simsearch duplicates --max-distance "
        f"{f['radius']} --json` (the loose level's radius, the widest search) in a child "
        "process; its wall time and peak RSS.",
        "",
        f"Machine: {_machine(f['machine'])}; load average {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} at the end (1/5/15 min). " + str(f.get("note") or ""),
        "",
        "| run | wall time | peak RSS | groups | members |",
        "|---|---:|---:|---:|---:|",
        f"| first run: search {rows:,} images, group | {first['seconds']:.1f} s | "
        f"{first['rss_mib']:.0f} MiB | {first['groups']:,} | {first['members']:,} |",
        f"| again, nothing new | {again['seconds']:.1f} s | {again['rss_mib']:.0f} MiB | "
        f"{again['groups']:,} | {again['members']:,} |",
        f"| after {f['new_rows']:,} new images | {inc['seconds']:.1f} s | {inc['rss_mib']:.0f} "
        f"MiB | {inc['groups']:,} | {inc['members']:,} |",
        "",
        f"- **{rows:,} images in {first['seconds']:.0f} s** ({rate:,.0f} images/s): the target "
        "is at most 5 minutes: " + ("met." if float(first["seconds"]) <= 300 else "**not met**."),
        f"- Candidate recall: the search stored {float(f['recall']):.4f} of the "  # type: ignore[arg-type]
        f"{f['true_pairs']:,} true pairs within the radius.",
        f"- Loading took {f['load_s']:.0f} s and the HNSW index build "
        f"{f['index_s']:.0f} s (not counted above).",
        "",
        "**What bounds it.** The first run is one HNSW scan per image (ef_search 64, 17 rows "
        "re-ranked by exact distance), 200 images per statement on two connections: about "
        "1.2 ms of one core per image at 100,000 x 1280, so the two cores are the limit, and "
        "the figure moves with the other work on the machine. Everything else is small: "
        "storing a batch's pairs and progress takes milliseconds, and grouping (reading "
        "the pairs within the radius, complete linkage in Python, saving the groups with "
        "COPY) is the whole of the second "
        f"run: {again['seconds']:.0f} s including the process's start. A run after "
        f"{f['new_rows']:,} new images searches only those.",
        "",
        "**Memory** is bounded by the batch while searching (200 images, their 17 "
        "neighbours' ids and distances; vectors never leave the database) and by the "
        "candidate pairs within the radius while grouping (tens of bytes each in Python, "
        f"{f['true_pairs']:,} pairs here): it grows with the number of duplicates, not "
        f"with n. Peak RSS {first['rss_mib']:.0f} MiB.",
        "",
        "**Extrapolated** (not measured): an HNSW scan costs about log n, so per image "
        "1M costs roughly 1.2x and 10M 1.4x what 100,000 does. At this run's rate that is "
        f"about {1.2 * 10 * float(first['seconds']) / 60:.0f} minutes for 1,000,000 images and "
        f"{1.4 * 100 * float(first['seconds']) / 3600:.1f} hours for 10,000,000 on two "
        "cores, linear in cores beyond (each batch is independent), and a later run costs "
        "only its new images plus the grouping (linear in the pairs). Two caveats: the index "
        "itself (the 1,000,000 x 1280 build took 19 minutes here, see above, and its "
        "recall@10 on that generator was 0.64), and candidate recall, measured here at "
        "100,000 only; near-duplicates lie far closer than ordinary neighbours, which helps "
        "the graph walk, but at 1M+ it should be measured before it is trusted.",
    ]
    return "\n".join(lines) + "\n"


def _machine(m: object) -> str:
    if not isinstance(m, dict):
        return str(m)
    return f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('ram')} RAM, Python {m.get('python')}"


def _write_doc(path: Path, section: str) -> None:
    """Replace the "## Duplicates" section of ``path`` (or append it), keeping the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(HEADING + "\n")
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + ("" if end < 0 else text[end:])
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
