"""Citus: recognising a coordinator, distributing simsearch's tables, and its session rules.

On a Citus coordinator with worker nodes, ``images`` and ``embeddings`` are hash-distributed by
``object_id`` and co-located (an image and its vectors live in one shard group), and the small
``feature_sets`` and ``shards`` become reference tables (a copy on every node). Citus requires
foreign keys to be added after the tables are distributed, one per ALTER TABLE, so
``distribute`` drops simsearch's four foreign keys, distributes, and adds them back.

Two session rules, found on a real cluster (tests/test_citus.py, docs/scaling.md):

- Settings reach the workers only as ``SET LOCAL`` with ``citus.propagate_set_commands =
  'local'``; ``set_config()`` changes the coordinator alone. ``local_settings`` writes them.
- A transaction that writes a reference table and touches a distributed table with a foreign
  key to it must use one connection per node (``SEQUENTIAL``), or Citus refuses it.

Both are harmless on a plain PostgreSQL server: an unknown ``citus.*`` setting is a placeholder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from psycopg import sql

from ..errors import DatabaseError
from .feature_sets import SEQUENTIAL, Connection

_DISTRIBUTE_LOCK = 7_411_004  # pg_advisory_lock key: one distribution at a time

REFERENCE_TABLES = ("feature_sets", "shards")
DISTRIBUTED_TABLES = ("images", "embeddings")  # by object_id, embeddings co-located with images
# simsearch's foreign keys (migration 0001), re-added after distribution in this order.
# (table, column, referenced table, its column); names as PostgreSQL gave them.
FOREIGN_KEYS = (
    ("shards", "feature_set_id", "feature_sets", "id"),
    ("embeddings", "feature_set_id", "feature_sets", "id"),
    ("embeddings", "object_id", "images", "object_id"),
    ("embeddings", "shard_id", "shards", "id"),
)


@dataclass
class Topology:
    """What kind of server simsearch talks to."""

    engine: str  # "PostgreSQL 18.4" or "Citus 14.0.1 on PostgreSQL 18.4"
    coordinator: bool = False  # a Citus coordinator (worker nodes or not)
    workers: list[str] = field(default_factory=list)  # host:port of active workers
    tables: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (type, shards)

    @property
    def distributable(self) -> bool:
        return self.coordinator and bool(self.workers)

    @property
    def distributed(self) -> bool:
        wanted = {t: "reference" for t in REFERENCE_TABLES}
        wanted |= {t: "distributed" for t in DISTRIBUTED_TABLES}
        return all(self.tables.get(t, ("", 0))[0] == kind for t, kind in wanted.items())

    @property
    def shard_count(self) -> int | None:
        found = self.tables.get("embeddings")
        return found[1] if found and found[0] == "distributed" else None


def topology(conn: Connection) -> Topology:
    """The server's engine, and on a Citus coordinator its workers and simsearch's tables."""
    row = conn.execute(
        """SELECT current_setting('server_version'),
                  (SELECT extversion FROM pg_extension WHERE extname = 'citus')"""
    ).fetchone()
    assert row is not None
    version, citus = str(row[0]), row[1]
    if citus is None:
        return Topology(f"PostgreSQL {version}")
    found = Topology(f"Citus {citus} on PostgreSQL {version}")
    coordinator = conn.execute("SELECT citus_is_coordinator()").fetchone()
    found.coordinator = bool(coordinator and coordinator[0])
    if not found.coordinator:
        return found
    found.workers = [
        f"{host}:{port}"
        for host, port in conn.execute(
            """SELECT nodename, nodeport FROM pg_dist_node
               WHERE groupid <> 0 AND noderole = 'primary' AND isactive
               ORDER BY nodename, nodeport"""
        ).fetchall()
    ]
    found.tables = {
        str(name): (str(kind), int(shards))
        for name, kind, shards in conn.execute(
            """SELECT table_name::text, citus_table_type, shard_count FROM citus_tables
               WHERE table_name::text = ANY(%s)""",
            [[*REFERENCE_TABLES, *DISTRIBUTED_TABLES]],
        ).fetchall()
    }
    return found


def distribute(conn: Connection, shard_count: int | None = None) -> list[str]:
    """Distribute simsearch's tables on a Citus coordinator with workers; what was done, one
    line a step (nothing when they already are). Existing rows move to the workers."""
    with _locked(conn):
        found = topology(conn)
        if not found.distributable:
            raise DatabaseError(_not_distributable(found))
        if found.distributed:
            return []
        done: list[str] = []
        with conn.transaction():
            conn.execute(SEQUENTIAL)
            for table, column, _, _ in FOREIGN_KEYS:
                conn.execute(
                    sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
                        sql.Identifier(table), sql.Identifier(f"{table}_{column}_fkey")
                    )
                )
            done += _drop_keys_into_distributed(conn)
            done += _create_tables(conn, found.tables, shard_count)
            for foreign_key in FOREIGN_KEYS:
                conn.execute(_add_foreign_key(*foreign_key))
            done.append("foreign keys: added back after distributing, one at a time")
        done += _drop_local_copies(conn)
        return done


def _create_tables(
    conn: Connection, tables: Mapping[str, tuple[str, int]], shard_count: int | None
) -> list[str]:
    done = []
    for table in REFERENCE_TABLES:
        if table not in tables:
            conn.execute("SELECT create_reference_table(%s)", [table])
            done.append(f"{table}: reference table (a copy on every node)")
    if "images" not in tables:
        if shard_count is None:
            conn.execute("SELECT create_distributed_table('images', 'object_id')")
        else:
            conn.execute(
                "SELECT create_distributed_table('images', 'object_id', shard_count => %s)",
                [shard_count],
            )
    if "embeddings" not in tables:
        conn.execute(
            "SELECT create_distributed_table('embeddings', 'object_id', colocate_with => 'images')"
        )
    row = conn.execute(
        "SELECT shard_count FROM citus_tables WHERE table_name = 'embeddings'::regclass"
    ).fetchone()
    shards = row[0] if row else "?"
    done.append(f"images, embeddings: distributed by object_id, co-located, {shards} shards")
    return done


def _drop_keys_into_distributed(conn: Connection) -> list[str]:
    """Foreign keys from simsearch's other tables (image files, duplicate search state) to
    images or embeddings: Citus allows none from a table that is not itself distributed, so
    they go; those tables stay on the coordinator, and their rows of deleted images are
    ignored (every reader joins them to the images that exist)."""
    rows = conn.execute(
        """SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c
           WHERE c.contype = 'f'
             AND c.confrelid IN ('images'::regclass, 'embeddings'::regclass)
             AND c.conrelid NOT IN ('images'::regclass, 'embeddings'::regclass)
           ORDER BY 1, 2"""
    ).fetchall()
    for table, name in rows:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(name)
            )
        )
    return [
        f"{table}: dropped foreign key {name} (kept on the coordinator)" for table, name in rows
    ]


def _add_foreign_key(table: str, column: str, target: str, target_column: str) -> sql.Composed:
    """One constraint per ALTER TABLE: Citus refuses more."""
    return sql.SQL(
        "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE CASCADE"
    ).format(
        sql.Identifier(table),
        sql.Identifier(f"{table}_{column}_fkey"),
        sql.Identifier(column),
        sql.Identifier(target),
        sql.Identifier(target_column),
    )


def _drop_local_copies(conn: Connection) -> list[str]:
    """Rows that were in the tables before distribution stay in the coordinator's (now hidden)
    local tables until truncated: free that space."""
    done = []
    for table in (*REFERENCE_TABLES, *DISTRIBUTED_TABLES):
        row = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM ONLY {})").format(sql.Identifier(table))
        ).fetchone()
        if row is not None and row[0]:
            conn.execute("SELECT truncate_local_data_after_distributing_table(%s)", [table])
            done.append(f"{table}: removed the coordinator's copy of the moved rows")
    return done


def _not_distributable(found: Topology) -> str:
    if not found.engine.startswith("Citus"):
        return f"expected a Citus coordinator, found {found.engine} without the citus extension"
    if not found.coordinator:
        return f"expected a Citus coordinator, found a Citus worker node ({found.engine})"
    return (
        "expected a Citus coordinator with worker nodes, found none active; add them with "
        "SELECT citus_add_node('HOST', PORT)"
    )


class _locked:
    """A session advisory lock: one distribution at a time."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("SELECT pg_advisory_lock(%s)", [_DISTRIBUTE_LOCK])

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", [_DISTRIBUTE_LOCK])


def distribute_if_coordinator(conn: Connection) -> list[str]:
    """First use on a Citus coordinator with workers: distribute the fresh schema."""
    found = topology(conn)
    if not found.distributable or found.distributed:
        return []
    return distribute(conn)


def local_settings(settings: Mapping[str, object]) -> sql.Composed:
    """``SET LOCAL`` statements that reach Citus workers too (one round trip, no parameters).

    Citus forwards ``SET LOCAL`` to every worker in the transaction when
    ``citus.propagate_set_commands`` is 'local'; ``set_config()`` never leaves the coordinator,
    so workers would search at pgvector's default ef_search (40).
    """
    statements: list[sql.Composable] = [sql.SQL("SET LOCAL citus.propagate_set_commands = 'local'")]
    for name, value in settings.items():
        setting = sql.Identifier(*name.split("."))
        statements.append(sql.SQL("SET LOCAL {} = {}").format(setting, sql.Literal(str(value))))
    return sql.SQL("; ").join(statements)
