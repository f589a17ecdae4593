"""The ``simsearch`` command: parse, call the library, print. Errors become one line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, config
from .errors import InputError, SimsearchError, one_line

if TYPE_CHECKING:
    from .db.citus import Topology

_EPILOG = """environment:
  SIMSEARCH_DATABASE_URL  PostgreSQL URL of an external server (unset: the embedded one)
  SIMSEARCH_REPLICA_URLS  comma-separated URLs of read replicas: searches go there first
  SIMSEARCH_HOME          where the embedded server and other state live
  SIMSEARCH_MODEL         ONNX model used when a command names none
  SIMSEARCH_NO_DAEMON     1: `query` always works in-process (as --no-daemon)"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        # The subcommand's own usage, not the top level's: it lists the options that exist.
        owner: argparse.ArgumentParser = getattr(args, "usage_parser", parser)
        owner.error(f"unrecognized arguments: {' '.join(extras)}")  # exits 2
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except SimsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        # Driver errors the library did not anticipate still get one line, never a traceback.
        import psycopg

        if isinstance(exc, psycopg.Error):
            print(f"error: database: {one_line(exc)}", file=sys.stderr)
            return 1
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simsearch",
        description="Similar-image search on PostgreSQL + pgvector.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"simsearch {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    ingest = commands.add_parser(
        "ingest",
        help="load NNNN.object_ids.npy + NNNN.features.npy shards into the database",
        description="Load every shard pair in FEATURE_DIR into a feature set, one transaction "
        "per shard. Re-running skips shards already loaded.",
    )
    ingest.add_argument("feature_dir", type=Path, metavar="FEATURE_DIR")
    ingest.add_argument("--feature-set", metavar="NAME", help="default: FEATURE_DIR's name")
    _model_options(ingest, "the ONNX model the features came from (recorded for `query`)")
    ingest.add_argument(
        "--replace", action="store_true", help="reload shards whose files changed since loading"
    )
    ingest.add_argument(
        "--no-index", action="store_true", help="do not build the ANN index after loading"
    )
    ingest.set_defaults(run=_ingest)

    query = commands.add_parser(
        "query",
        help="print the stored images most similar to a photo",
        description="Embed IMAGE with the feature set's model and print OBJECT_ID DISTANCE "
        "lines, nearest first. Several images (or a folder): one model load, batched "
        "inference, one block per image headed '# PATH'. --id queries with a stored vector.",
    )
    query.add_argument(
        "images", type=Path, nargs="*", metavar="IMAGE", help="image files or folders of images"
    )
    query.add_argument(
        "--id",
        dest="ids",
        action="append",
        default=[],
        metavar="OBJECT_ID",
        help="query with this stored image's vector, itself left out (repeatable)",
    )
    query.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COND",
        help="only images with KEY=VALUE, KEY!=VALUE or a range such as 'width>=1024' or "
        "'added_at<2026-01-01'; KEY is an images column or a meta key (repeatable, all must hold)",
    )
    query.add_argument(
        "-n", type=_positive, default=config.RESULTS, help=f"how many results ({config.RESULTS})"
    )
    query.add_argument("--feature-set", metavar="NAME", help="needed when there are several")
    _model_options(query, "override the feature set's model")
    query.add_argument(
        "--exact", action="store_true", help="exact scan in the database, no ANN index"
    )
    query.add_argument(
        "--ef",
        type=_positive,
        default=None,
        metavar="N",
        help=f"the recall knob, HNSW ef_search ({config.EF_SEARCH}): higher is slower and surer",
    )
    query.add_argument(
        "--json", action="store_true", help="print a JSON array (each result with its path)"
    )
    query.add_argument(
        "--paths",
        action="store_true",
        help="print each result's file (absolute path) instead of its object id, where a file "
        "is recorded (`simsearch index` records them)",
    )
    query.add_argument(
        "--no-daemon",
        action="store_true",
        help="work in this process; by default a resident `simsearch serve` (started on demand) "
        "does the work, which saves loading the libraries and the model each time",
    )
    query.set_defaults(run=_query, query_parser=query)
    _add_server_commands(commands)

    scan = commands.add_parser(
        "scan",
        help="exact NumPy scan over shards on disk, no database (the reference)",
        description="The origin's algorithm: Euclidean distance to every stored vector, "
        "one shard in memory at a time.",
    )
    scan.add_argument("feature_dir", type=Path, metavar="FEATURE_DIR")
    scan.add_argument("image", type=Path, metavar="IMAGE")
    scan.add_argument(
        "-n", type=_positive, default=config.RESULTS, help=f"how many results ({config.RESULTS})"
    )
    _model_options(scan, "the ONNX model the features came from")
    scan.add_argument("--json", action="store_true", help="print a JSON array")
    scan.set_defaults(run=_scan)

    index_build = commands.add_parser(
        "index-build",
        help="(re)build a feature set's HNSW index",
        description="Build the HNSW index on half-precision vectors that default queries use.",
    )
    index_build.add_argument("--feature-set", metavar="NAME", help="needed when there are several")
    index_build.add_argument(
        "--m",
        type=_positive,
        default=config.HNSW_M,
        help=f"HNSW links per node ({config.HNSW_M})",
    )
    index_build.add_argument(
        "--ef-construction",
        type=_positive,
        default=config.HNSW_EF_CONSTRUCTION,
        metavar="N",
        help=f"HNSW build candidates ({config.HNSW_EF_CONSTRUCTION})",
    )
    index_build.add_argument("--drop", action="store_true", help="drop the index instead")
    index_build.set_defaults(run=_index_build)

    evaluate = commands.add_parser(
        "eval",
        help="recall@k of default (ANN) queries against the exact scan, with latencies",
        description="Use a sample of stored vectors as queries; answer each by the default "
        "query path and by the exact scan; print recall@k and p50/p95 latency per --ef.",
    )
    evaluate.add_argument("--feature-set", metavar="NAME", help="needed when there are several")
    evaluate.add_argument(
        "--sample", type=_positive, default=100, help="stored vectors used as queries (100)"
    )
    evaluate.add_argument("-k", type=_positive, default=10, help="results compared (10)")
    evaluate.add_argument(
        "--ef",
        type=_positive,
        nargs="+",
        action="extend",  # --ef 10 --ef 40 compares both, as --ef 10 40 does
        default=None,
        metavar="N",
        help="ef_search settings to compare (default: the query default)",
    )
    evaluate.add_argument(
        "--candidates",
        type=_positive,
        default=None,
        metavar="N",
        help="candidates re-ranked exactly (default: as queries do)",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="which sample (0)")
    evaluate.add_argument(
        "--held-out",
        action="store_true",
        help="leave each query's own row out of both answers: queries then stand for new "
        "photos, as users' searches do, not for images the index holds",
    )
    evaluate.add_argument("--json", action="store_true", help="print a JSON object")
    evaluate.set_defaults(run=_eval)
    _add_embedding_commands(commands)
    _add_sql_surface_commands(commands)
    _add_duplicates_command(commands)

    db = commands.add_parser("db", help="the database: status, url, upgrade, stop")
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND")
    db_status = db_commands.add_parser(
        "status", help="where the database is, schema revision, feature sets, indexes"
    )
    db_status.set_defaults(run=_db_status)
    db_url = db_commands.add_parser("url", help="print a connection URL for psql")
    db_url.set_defaults(run=_db_url)
    db_distribute = db_commands.add_parser(
        "distribute",
        help="distribute the tables on a Citus coordinator (idempotent)",
        description="On a Citus coordinator with worker nodes: make feature_sets and shards "
        "reference tables and hash-distribute images and embeddings by object_id, co-located; "
        "existing rows move to the workers. Does nothing when they already are distributed.",
    )
    db_distribute.add_argument(
        "--shard-count",
        type=_positive,
        default=None,
        metavar="N",
        help="shards of images and embeddings (default: the server's citus.shard_count, 32)",
    )
    db_distribute.set_defaults(run=_db_distribute)
    db_upgrade = db_commands.add_parser("upgrade", help="apply pending schema migrations")
    db_upgrade.set_defaults(run=_db_upgrade)
    db_stop = db_commands.add_parser("stop", help="stop the embedded PostgreSQL server")
    db_stop.set_defaults(run=_db_stop)
    db.set_defaults(run=lambda args: _print_help(db))
    _own_usage(parser)
    return parser


def _own_usage(parser: argparse.ArgumentParser) -> None:
    """Let every subcommand's parser be found from the parsed arguments (for its usage)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(usage_parser=sub)
                _own_usage(sub)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _model_options(parser: argparse.ArgumentParser, model_help: str) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="MODEL.onnx", help=model_help)
    group.add_argument("--input-name", metavar="NAME", help="the model's image input")
    group.add_argument("--output-name", metavar="NAME", help="the model's feature output")
    group.add_argument("--layout", choices=["NHWC", "NCHW"], type=str.upper)
    group.add_argument("--input-size", metavar="WxH", type=_size, help="e.g. 224x224")
    group.add_argument("--mean", metavar="R,G,B", type=_triple, help="subtracted after scaling")
    group.add_argument("--std", metavar="R,G,B", type=_triple, help="divided by after the mean")


def _overrides(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .model import Overrides

    return Overrides(**_overrides_dict(args))  # type: ignore[arg-type]


def _overrides_dict(args: argparse.Namespace) -> dict[str, object]:
    size = args.input_size or (None, None)
    return {
        "input_name": args.input_name,
        "output_name": args.output_name,
        "layout": args.layout,
        "width": size[0],
        "height": size[1],
        "mean": args.mean,
        "std": args.std,
    }


def _ingest(args: argparse.Namespace) -> int:
    from .ingest import ingest
    from .progress import Progress

    report = ingest(
        args.feature_dir,
        feature_set=args.feature_set,
        model=args.model,
        replace=args.replace,
        overrides=_overrides(args),
        progress=Progress(),
        build_index=not args.no_index,
    )
    print(report.summary())
    return 0


def _query(args: argparse.Namespace) -> int:
    options = _query_options(args)
    if args.ids or args.where or len(args.images) != 1 or args.images[0].is_dir():
        return _query_many(args, options)
    if not args.no_daemon:
        # The thin client imports only the standard library; None means: work here instead.
        from .server import client

        answer = client.query(options, args.images[0])
        if answer is not None:
            _print_matches(answer, args, {r.object_id: r.path for r in answer})
            return 0
    from .search import query

    (matches,) = query(args.images, options)
    _print_matches(matches, args, _paths(args, matches))
    return 0


def _paths(args: argparse.Namespace, matches) -> dict[str, str | None]:  # type: ignore[no-untyped-def]
    """The results' files, when the output shows them (--paths, --json)."""
    if not (args.paths or args.json) or not matches:
        return {}
    from .db import connect
    from .search import file_paths

    with connect.connect() as conn:
        return file_paths(conn, [m.object_id for m in matches])


def _query_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .options import QueryOptions

    return QueryOptions(
        n=args.n,
        feature_set=args.feature_set,
        exact=args.exact,
        ef_search=args.ef or config.EF_SEARCH,
        where=tuple(args.where),
        model=args.model,
        overrides=_overrides_dict(args),
    )


def _add_server_commands(commands) -> None:  # type: ignore[no-untyped-def]
    serve = commands.add_parser(
        "serve",
        help="the search server: HTTP API, web page, and the resident process for `query`",
        description="Load each feature set's model and a connection pool once, then answer "
        "HTTP on a loopback port (API and web page at /) and on a private Unix socket that "
        "`simsearch query` uses. Ends on Ctrl-C, SIGTERM or `simsearch stop`.",
    )
    serve.add_argument("--host", default=config.HOST, help=f"address to listen on ({config.HOST})")
    serve.add_argument(
        "--port",
        type=int,
        default=config.PORT,
        help=f"TCP port ({config.PORT}; 0 picks a free one)",
    )
    serve.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help="Unix socket (default: under SIMSEARCH_HOME/run, where `query` looks)",
    )
    serve.add_argument(
        "--image-root",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="folder that relative image paths in the database are under (repeatable)",
    )
    serve.add_argument(
        "--max-upload-mb",
        type=_positive,
        default=config.MAX_UPLOAD_MB,
        metavar="MB",
        help=f"largest upload accepted ({config.MAX_UPLOAD_MB} MB; larger: HTTP 413)",
    )
    serve.add_argument(
        "--max-pixels",
        type=_positive,
        default=config.MAX_PIXELS,
        metavar="N",
        help=f"largest image accepted, in pixels ({config.MAX_PIXELS:,}; larger: HTTP 422)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long without a request (default: never)",
    )
    serve.add_argument(
        "--detach", action="store_true", help="run in the background; `simsearch stop` ends it"
    )
    # Started on demand by `query`: socket only, and replaced when the code or settings change.
    serve.add_argument("--auto", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)

    stop = commands.add_parser("stop", help="stop the search server (`simsearch serve`)")
    stop.set_defaults(run=_stop)


def _serve(args: argparse.Namespace) -> int:
    if args.detach:
        from .server import process

        pid = process.start_background(_serve_argv(args))
        info = process.running() or {}
        print(f"simsearch server (pid {pid}): {info.get('url') or info.get('socket')}")
        return 0
    from .server.run import serve

    return serve(
        host=args.host,
        port=None if args.auto else args.port,
        socket_path=args.socket,
        auto=args.auto,
        idle_timeout=args.idle_timeout,
        image_roots=args.image_root,
        max_upload=args.max_upload_mb * 2**20,
        max_pixels=args.max_pixels,
    )


def _serve_argv(args: argparse.Namespace) -> list[str]:
    """``serve``'s options again, for the detached process to parse."""
    argv = ["--host", args.host, "--port", str(args.port)]
    argv += ["--max-upload-mb", str(args.max_upload_mb), "--max-pixels", str(args.max_pixels)]
    if args.socket is not None:
        argv += ["--socket", str(args.socket.resolve())]
    for root in args.image_root:
        argv += ["--image-root", str(root.resolve())]
    if args.idle_timeout is not None:
        argv += ["--idle-timeout", str(args.idle_timeout)]
    return argv


def _stop(args: argparse.Namespace) -> int:
    from .server import process

    pid = process.stop()
    print(f"stopped the simsearch server (pid {pid})" if pid else "no simsearch server was running")
    return 0


def _scan(args: argparse.Namespace) -> int:
    from .reference import scan

    matches = scan(args.feature_dir, args.image, args.n, args.model, _overrides(args))
    if args.json:  # no database here: no files known
        print(json.dumps([{"object_id": m.object_id, "distance": m.distance} for m in matches]))
        return 0
    _print_matches(matches, args, {})
    return 0


def _query_many(args: argparse.Namespace, options) -> int:  # type: ignore[no-untyped-def]
    """Several queries, --id or --where: in-process, one block (or JSON line) per query."""
    from .search import expand_images, query_many

    if not args.images and not args.ids:
        args.query_parser.error("expected IMAGE, a folder of images or --id OBJECT_ID")  # exit 2
    images = expand_images(args.images)
    if not images and not args.ids:
        raise InputError(f"query: no image files under {', '.join(map(str, args.images))}")
    results = query_many(images, args.ids, options)
    paths = _paths(args, [m for _, matches in results for m in matches])
    if len(results) == 1 and len(args.images) <= 1 and not any(p.is_dir() for p in args.images):
        _print_matches(results[0][1], args, paths)  # one query: the single-image format
        return 0
    for number, (label, matches) in enumerate(results):
        if args.json:
            key = "id" if number < len(args.ids) else "image"
            print(json.dumps({key: label, "results": _json_rows(matches, paths)}))
            continue
        print(f"{chr(10) if number else ''}# {label}")
        _print_matches(matches, args, paths, as_json=False)
    return 0


def _add_sql_surface_commands(commands) -> None:  # type: ignore[no-untyped-def]
    meta = commands.add_parser("meta", help="image metadata: import")
    meta_commands = meta.add_subparsers(title="commands", metavar="COMMAND")
    meta_import = meta_commands.add_parser(
        "import",
        help="upsert image metadata from a CSV or JSON-lines file by object_id",
        description="Each record needs object_id. path, bytes, width, height and added_at go "
        "to the images table's columns; every other field is merged into images.meta (jsonb). "
        "Prints rows matched, added and rejected (one line per rejected row, on stderr).",
    )
    meta_import.add_argument("file", type=Path, metavar="FILE.csv|FILE.jsonl")
    meta_import.set_defaults(run=_meta_import)
    meta.set_defaults(run=lambda args: meta.print_help() or 2)

    delete = commands.add_parser(
        "delete",
        help="delete images (or their rows in one feature set)",
        description="Without --feature-set: delete the images, their metadata and their rows "
        "in every feature set. With it: delete only that feature set's rows. The shard ledger "
        "counts deleted rows, so re-ingesting unchanged shards does not bring them back "
        "(ingest --replace does).",
    )
    delete.add_argument("object_ids", nargs="+", metavar="OBJECT_ID")
    delete.add_argument("--feature-set", metavar="NAME", help="delete only from this feature set")
    delete.set_defaults(run=_delete)

    drop = commands.add_parser(
        "drop",
        help="delete a feature set: its rows, ledger and index (images stay)",
    )
    drop.add_argument("feature_set", metavar="FEATURE_SET")
    drop.set_defaults(run=_drop)


def _meta_import(args: argparse.Namespace) -> int:
    from .metadata import import_file

    report = import_file(args.file)
    for line in report.rejected:
        print(f"rejected {line}", file=sys.stderr)
    print(report.summary())
    return 0


def _delete(args: argparse.Namespace) -> int:
    from .db import connect, feature_sets, images
    from .progress import plural

    for given in args.object_ids:
        _refuse_a_path(given)
    with connect.connect() as conn:
        fs = None
        if args.feature_set is not None:
            fs = feature_sets.resolve(conn, args.feature_set)
        report = images.delete_objects(conn, args.object_ids, fs)
    where = f"feature set {fs.name!r}" if fs else "every feature set"
    if report.missing and not report.embeddings and not report.images:
        missing = ", ".join(repr(i) for i in report.missing)
        raise InputError(f"no image with object id {missing}; nothing deleted")
    line = f"deleted {plural(report.embeddings, 'row')} from {where}"
    if fs is None:
        line += f" and {plural(report.images, 'image')}"
    print(line)
    for object_id in report.missing:
        print(f"warning: no image with object id {object_id!r}", file=sys.stderr)
    return 0


def _refuse_a_path(given: str) -> None:
    """An image file named where an object id belongs: say which id it has."""
    path = Path(given)
    if not path.is_file():
        return
    from .gallery import object_id

    stored = object_id(path.name, path.read_bytes())
    if stored != given:
        raise InputError(
            f"{given} is a path: the image's object id is {stored} "
            f"(simsearch delete {stored}); expected object ids"
        )


def _drop(args: argparse.Namespace) -> int:
    from .db import connect, feature_sets, images
    from .progress import plural

    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, args.feature_set)
        rows = feature_sets.drop(conn, fs)
        # Its folders' files, unless another feature set records the folder too. A transaction
        # of its own: Citus refuses one that writes a distributed table and then the
        # coordinator's image_files; a crash in between leaves rows that the next drop, or
        # `index --prune`, forgets.
        images.forget_unrecorded_roots(conn)
    print(f"dropped feature set {fs.name!r} ({plural(rows, 'row')}, its ledger and index)")
    return 0


def _add_duplicates_command(commands) -> None:  # type: ignore[no-untyped-def]
    dup = commands.add_parser(
        "duplicates",
        help="groups of duplicate and near-duplicate photos, and the copy to keep in each",
        description="Group the copies of one photo in a feature set: identical files (level "
        "exact) and edited copies (strict, loose: calibrated for the default model, see "
        "docs/duplicates.md; --max-distance D for other models). Every two members of a group "
        "are within the level's threshold. Incremental: only images not searched before are "
        "searched. Reports only, unless --move-to.",
    )
    dup.add_argument("--feature-set", metavar="NAME", help="needed when there are several")
    dup.add_argument(
        "--level",
        choices=["exact", "strict", "loose"],
        default=None,
        help="exact: the same bytes; strict (default): precision about 0.99 on real photos; "
        "loose: more copies found, precision about 0.95",
    )
    dup.add_argument(
        "--max-distance",
        type=float,
        default=None,
        metavar="D",
        help="instead of a level: every two members within Euclidean distance D (other models)",
    )
    dup.add_argument(
        "--max-group-size",
        type=_positive,
        default=50,
        metavar="N",
        help="the largest group reported (50)",
    )
    output = dup.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON object")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per member")
    act = dup.add_mutually_exclusive_group()
    act.add_argument(
        "--move-to",
        type=Path,
        metavar="DIR",
        help="move every copy but the keeper into DIR, with a manifest for --undo",
    )
    act.add_argument(
        "--undo", type=Path, metavar="MANIFEST", help="put back the files a --move-to moved"
    )
    act.add_argument(
        "--not-duplicate",
        nargs=2,
        metavar=("ID1", "ID2"),
        help="record that two images are not duplicates; later runs never group them",
    )
    dup.set_defaults(run=_duplicates)


def _duplicates(args: argparse.Namespace) -> int:
    from .duplicates import finder, moving
    from .progress import Progress

    if args.not_duplicate:
        first, second = args.not_duplicate
        new = finder.not_duplicate(first, second)
        print(f"recorded: {first} and {second} are not duplicates" + ("" if new else " (already)"))
        return 0
    if args.undo is not None:
        print(moving.undo(args.undo).summary(undo=True))
        return 0
    report = finder.find_duplicates(
        args.feature_set,
        args.level,
        args.max_distance,
        max_group_size=args.max_group_size,
        progress=Progress(),
    )
    if args.json:
        print(json.dumps(report.to_json()))
    elif args.csv:
        _print_duplicates_csv(report)
    else:
        _print_duplicates(report)
    summary = sys.stderr if args.json or args.csv else sys.stdout
    print(("" if summary is sys.stderr else "\n") + report.summary(), file=summary)
    if args.move_to is not None:
        moved = moving.move_copies(report, args.move_to)
        for line in moved.skipped:
            print(f"skipped: {line}", file=sys.stderr)
        print(moved.summary(), file=summary)
    return 0


def _print_duplicates(report) -> None:  # type: ignore[no-untyped-def]
    for group in report.groups:
        print(
            f"{chr(10) if group.number > 1 else ''}group {group.number} ({group.level}, "
            f"diameter {group.diameter:.2f}): keep {group.keep}: {group.reason}"
        )
        for m in group.members:
            role = "keep" if m.object_id == group.keep else "copy"
            size = f"{m.width}x{m.height}" if m.width and m.height else "?"
            weight = f"{m.bytes:,} bytes" if m.bytes is not None else "? bytes"
            print(f"  {role} {m.distance:6.2f}  {m.path or m.object_id}  {size}  {weight}")


def _print_duplicates_csv(report) -> None:  # type: ignore[no-untyped-def]
    import csv

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(
        ["group", "level", "diameter", "keep", "reason", "object_id", "path", "distance",
         "width", "height", "bytes"]
    )  # fmt: skip
    for g in report.groups:
        for m in g.members:
            keep = m.object_id == g.keep
            writer.writerow(
                [g.number, g.level, f"{g.diameter:.4f}", "yes" if keep else "no",
                 g.reason if keep else "", m.object_id, m.path or "", f"{m.distance:.4f}",
                 m.width or "", m.height or "", "" if m.bytes is None else m.bytes]
            )  # fmt: skip


def _print_matches(  # type: ignore[no-untyped-def]
    matches, args: argparse.Namespace, paths: dict[str, str | None], as_json: bool | None = None
) -> None:
    """The origin's OBJECT_ID DISTANCE lines (with --paths the file in place of the id, where
    one is recorded), or a JSON array whose rows always carry ``path``."""
    if args.json if as_json is None else as_json:
        print(json.dumps(_json_rows(matches, paths)))
        return
    show_paths = getattr(args, "paths", False)
    for match in matches:
        label = (paths.get(match.object_id) if show_paths else None) or match.object_id
        print(f"{label} {match.distance}")


def _json_rows(matches, paths: dict[str, str | None]) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    return [
        {"object_id": m.object_id, "distance": m.distance, "path": paths.get(m.object_id)}
        for m in matches
    ]


def _index_build(args: argparse.Namespace) -> int:
    from .db import connect, feature_sets, hnsw

    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, args.feature_set)
        if args.drop:
            hnsw.drop(conn, fs)
            print(f"{fs.name}: dropped the HNSW index; queries scan exactly")
            return 0
        from .progress import Progress

        progress = Progress()
        progress.note(
            f"building the HNSW index (m={args.m}, ef_construction={args.ef_construction}) ..."
        )
        hnsw.build(conn, fs, args.m, args.ef_construction)
        print(f"{fs.name}: built the HNSW index in {progress.elapsed:.1f} s")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    result = evaluate(
        feature_set=args.feature_set,
        sample=args.sample,
        k=args.k,
        ef_search=args.ef or [config.EF_SEARCH],
        candidates=args.candidates,
        seed=args.seed,
        held_out=args.held_out,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print("\n".join(result.lines()))
    return 0


def _add_embedding_commands(commands) -> None:  # type: ignore[no-untyped-def]
    embed = commands.add_parser(
        "embed",
        help="embed a folder of images into .npy shards (no database)",
        description="Embed every image under IMAGE_DIR into OUT_DIR as NNNN.object_ids.npy + "
        "NNNN.features.npy shards, with simsearch.json recording the model and preprocessing. "
        "Re-running skips finished shards and embeds only the rest.",
    )
    embed.add_argument("image_dir", type=Path, metavar="IMAGE_DIR")
    embed.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    embed.add_argument(
        "--shard-size",
        type=_positive,
        default=config.SHARD_SIZE,
        metavar="N",
        help=f"images per shard ({config.SHARD_SIZE})",
    )
    _embedding_options(embed)
    embed.set_defaults(run=_embed)

    index = commands.add_parser(
        "index",
        help="embed a folder of images and load it into a feature set",
        description="Embed every image under IMAGE_DIR and store the vectors, with each "
        "image's path, size and dimensions. Re-running adds only new files.",
    )
    index.add_argument("image_dir", type=Path, metavar="IMAGE_DIR")
    index.add_argument("--feature-set", metavar="NAME", help="default: IMAGE_DIR's name")
    index.add_argument(
        "--no-index", action="store_true", help="do not build the ANN index after loading"
    )
    index.add_argument(
        "--prune",
        action="store_true",
        help="forget files recorded under IMAGE_DIR that are gone, and remove from the feature "
        "set the images no file in its folders holds any more",
    )
    _embedding_options(index)
    index.set_defaults(run=_index)

    demo = commands.add_parser(
        "demo",
        help="index real sample photos and search them with an edited copy",
        description="Write scikit-image's sample photos to WORKDIR/gallery, index them with "
        "the default model into feature set 'demo', and search with an edited copy of one.",
    )
    demo.add_argument("--workdir", type=Path, metavar="DIR", help="default: $SIMSEARCH_HOME/demo")
    demo.add_argument("-n", type=_positive, default=5, help="how many results (default 5)")
    demo.set_defaults(run=_demo)


def _embedding_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--id",
        choices=["sha1", "path"],
        default="sha1",
        dest="id_mode",
        help="object id: SHA-1 of the file + extension (default), or the relative path",
    )
    parser.add_argument(
        "--batch",
        type=_positive,
        default=config.BATCH,
        metavar="N",
        help=f"images per inference ({config.BATCH})",
    )
    parser.add_argument(
        "--decode",
        choices=["draft", "full"],
        default=None,
        help="JPEG decoding: draft (reduced-scale, fast; default for the built-in model) or "
        "full (every pixel, as the origin; default for your own models)",
    )
    parser.add_argument(
        "--alpha",
        choices=["white", "drop"],
        default=None,
        help="transparent images: white (composited onto white as a viewer shows them; default "
        "for the built-in model) or drop (the alpha channel discarded, as the origin's "
        'convert("RGB"); default for your own models)',
    )
    _model_options(parser, "ONNX model (default: the built-in EfficientNet-Lite0)")


def _embed(args: argparse.Namespace) -> int:
    from .embed import embed
    from .progress import Progress

    report = embed(
        args.image_dir,
        args.out_dir,
        model=args.model or _env_model(),
        overrides=_overrides(args),
        decode=args.decode,
        alpha=args.alpha,
        shard_size=args.shard_size,
        batch=args.batch,
        id_mode=args.id_mode,
        progress=Progress(),
    )
    print(report.summary())
    return 0


def _index(args: argparse.Namespace) -> int:
    from .indexing import index
    from .progress import Progress

    report = index(
        args.image_dir,
        feature_set=args.feature_set,
        model=args.model or _env_model(),
        overrides=_overrides(args),
        decode=args.decode,
        alpha=args.alpha,
        batch=args.batch,
        id_mode=args.id_mode,
        progress=Progress(),
        build_index=not args.no_index,
        prune=args.prune,
    )
    print(report.summary())
    return 0


def _env_model() -> str | None:
    return config.model_path()


def _demo(args: argparse.Namespace) -> int:
    from .demo import print_result, run_demo

    result = run_demo(args.workdir, n=args.n, say=lambda line: print(line, flush=True))
    print_result(result, sys.stdout)
    return 0 if result.original_first else 1


def _db_status(args: argparse.Namespace) -> int:
    from .db import citus, connect, feature_sets
    from .progress import plural

    print(f"database: {connect.describe()}")
    for replica in connect.describe_replicas():
        print(f"read replica: {replica}")
    with connect.connect() as conn:
        version, vector = feature_sets.server_version(conn)
        print(f"server: PostgreSQL {version}, pgvector {vector}")
        found = citus.topology(conn)
        print(f"engine: {found.engine}")
        if found.coordinator:
            print(_citus_line(found))
        print(f"schema revision: {connect.schema_revision(conn)}")
        statuses = feature_sets.status(conn)
    if not statuses:
        print("feature sets: none")
    for st in statuses:
        fs = st.feature_set
        if fs.indexed and fs.index_params:
            p = fs.index_params
            index = f"hnsw m={p.get('m')} ef_construction={p.get('ef_construction')}"
            if fs.reduced is not None:
                index += f" on a PCA copy reduced to {fs.reduced} dimensions"
            index += f" ({(st.index_bytes or 0) / 2**20:.1f} MiB)"
        else:
            index = "none (exact scan)"
        print(
            f"feature set {fs.name}: {plural(st.rows, 'row')}, dimension {fs.dimension}, "
            f"{plural(st.shards, 'shard')}, model {fs.model or '(none recorded)'}, index {index}"
        )
    return 0


def _citus_line(found: Topology) -> str:
    workers = ", ".join(found.workers) or "none"
    if found.distributed:
        layout = f"tables distributed, {found.shard_count} shards"
    else:
        layout = "tables not distributed (run `simsearch db distribute`)"
    return f"citus workers: {len(found.workers)} ({workers}); {layout}"


def _db_distribute(args: argparse.Namespace) -> int:
    from .db import citus, connect

    with connect.connect() as conn:
        done = citus.distribute(conn, args.shard_count)
        found = citus.topology(conn)
    for line in done:
        print(line)
    if not done:
        print("nothing to do: the tables are already distributed")
    print(_citus_line(found))
    return 0


def _db_url(args: argparse.Namespace) -> int:
    from .db import connect

    print(connect.url())
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from .db import connect

    with connect.connect(migrate=False) as conn:
        before = connect.schema_revision(conn)
        connect.ensure_schema(conn)
        after = connect.schema_revision(conn)
    print(f"schema revision: {after}" + ("" if before == after else f" (was {before})"))
    return 0


def _db_stop(args: argparse.Namespace) -> int:
    if config.database_url():
        print("SIMSEARCH_DATABASE_URL is set: simsearch does not manage that server")
        return 1
    from .db import embedded
    from .server import process

    if process.stop():  # it holds connections to the database
        print("stopped the simsearch server")
    stopped = embedded.stop(config.home())
    print(
        "stopped the embedded PostgreSQL" if stopped else "the embedded PostgreSQL was not running"
    )
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number, found {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, found {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        width, height = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        width = height = 0
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 224x224, found {text!r}")
    return width, height


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers R,G,B, found {text!r}")
    return values


if __name__ == "__main__":
    sys.exit(main())
