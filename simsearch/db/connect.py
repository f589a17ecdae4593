"""Connecting to PostgreSQL: which server, the pgvector adapter, and a current schema.

The schema belongs to Alembic (``migrations/``). Checking it is one cheap query; Alembic and
SQLAlchemy are imported only when an upgrade is due, because they cost more than a search.
Connections are in autocommit mode (see the package's docstring).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from .. import config
from ..errors import DatabaseError, one_line, redact
from . import embedded
from .feature_sets import Connection

# The newest migration this code knows; tests hold it equal to Alembic's head.
SCHEMA_REVISION = "0008"
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008")
CONNECT_TIMEOUT = 10  # seconds
# A replica that does not answer within this many seconds is skipped for the next server.
REPLICA_TIMEOUT = 3
_MIGRATION_LOCK = 7_411_001  # pg_advisory_lock key: one schema upgrade at a time


def conninfo() -> str:
    """The configured server: SIMSEARCH_DATABASE_URL, or the embedded one."""
    url = config.database_url()
    if url is None:
        return embedded.conninfo(config.home())
    return _libpq_url(url)


def _libpq_url(url: str) -> str:
    # SQLAlchemy-style URLs name a driver; libpq does not accept that.
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", url)


def describe() -> str:
    """Where the database is, for messages: the URL without its password."""
    url = config.database_url()
    if url is None:
        return f"embedded PostgreSQL in {embedded.pgdata(config.home())}"
    return redact(url)


def url() -> str:
    """A URL for psql: SIMSEARCH_DATABASE_URL, or the embedded server's (started if need be)."""
    return config.database_url() or embedded.url(config.home())


@contextmanager
def connect(migrate: bool = True, read_only: bool = False) -> Iterator[Connection]:
    """An autocommit connection with pgvector registered and the schema current.

    ``read_only``: a connection for searches. With SIMSEARCH_REPLICA_URLS set it goes to the
    first replica that answers, then to the primary, and never migrates (a replica cannot be
    written): it refuses a schema other than this code's instead. Without replicas it is the
    ordinary connection.
    """
    replicas = read_only and bool(config.replica_urls())
    if replicas:
        conn: Connection = open_read()
    else:
        try:
            conn = psycopg.connect(conninfo(), connect_timeout=CONNECT_TIMEOUT, autocommit=True)
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"cannot connect to {describe()}: {one_line(exc)}") from None
    with conn:
        if replicas:
            check_current(conn)
        elif migrate:
            ensure_schema(conn)
        configure(conn)
        yield conn


def read_targets() -> list[tuple[str, str]]:
    """(conninfo, description) of each server a search may use, in order: the replicas,
    then the primary. Replicas need an external primary: the embedded server is never
    started for them."""
    replicas = config.replica_urls()
    if not replicas:
        return [(conninfo(), describe())]
    if config.database_url() is None:
        raise DatabaseError(
            f"{config.REPLICA_URLS_ENV} is set but {config.DATABASE_URL_ENV} is not: expected "
            "the primary's URL there (replicas copy an external server, not the embedded one)"
        )
    return [(_libpq_url(url), f"replica {redact(url)}") for url in replicas] + [
        (conninfo(), f"primary {describe()}")
    ]


class ReadConnection(psycopg.Connection[Any]):
    """A search connection to the first of ``read_targets`` that answers: a replica that is
    down is skipped for the next one, then the primary. Also the server pool's connections."""

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> ReadConnection:
        failures = []
        kwargs.setdefault("connect_timeout", REPLICA_TIMEOUT)
        for target, where in read_targets():
            try:
                return super().connect(target, **kwargs)
            except psycopg.OperationalError as exc:
                failures.append(f"{where}: {one_line(exc)}")
        raise psycopg.OperationalError("no server answered a search: " + "; ".join(failures))


def open_read() -> Connection:
    """A ReadConnection, or a DatabaseError naming every server that failed."""
    try:
        return ReadConnection.connect(autocommit=True)
    except psycopg.OperationalError as exc:
        raise DatabaseError(one_line(exc)) from None


def describe_replicas() -> list[str]:
    """The configured read replicas, for messages: URLs without passwords."""
    return [redact(url) for url in config.replica_urls()]


def check_current(conn: Connection) -> None:
    """A server searches may use without migrating it: its schema must be this code's (a
    replica cannot be upgraded; its primary can, with `simsearch db upgrade`)."""
    revision = schema_revision(conn)
    if revision == SCHEMA_REVISION:
        return
    check_known(revision)
    where = f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}"
    found = "no simsearch schema" if revision is None else f"schema revision {revision}"
    raise DatabaseError(
        f"the server at {where} has {found}, expected revision {SCHEMA_REVISION}; run "
        "`simsearch db upgrade` against the primary and let the replicas catch up"
    )


def configure(conn: Connection) -> None:
    """What every connection needs, pooled ones included: pgvector's types."""
    from pgvector.psycopg import register_vector

    register_vector(conn)


def schema_revision(conn: Connection) -> str | None:
    row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return None
    found = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if found is None else str(found[0])


def ensure_schema(conn: Connection) -> None:
    """Apply pending migrations; refuse a schema newer than this code."""
    revision = schema_revision(conn)
    if revision == SCHEMA_REVISION:
        return
    check_known(revision)
    upgrade(conn)
    # A Citus coordinator with workers: the fresh schema is distributed on first use.
    from . import citus

    citus.distribute_if_coordinator(conn)


def check_known(revision: str | None) -> None:
    if revision is not None and revision not in KNOWN_REVISIONS:
        raise DatabaseError(
            f"{describe()} has schema revision {revision}, newer than this simsearch knows "
            f"(up to {SCHEMA_REVISION}); upgrade simsearch"
        )


def upgrade(conn: Connection) -> None:
    """Run Alembic to head, one process at a time."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    conn.execute("SELECT pg_advisory_lock(%s)", [_MIGRATION_LOCK])
    try:
        check_known(schema_revision(conn))  # another process may have upgraded meanwhile
        require_pgvector(conn)
        target = conninfo()
        engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(target))
        try:
            with engine.begin() as connection:
                cfg = Config()
                cfg.set_main_option("script_location", str(migrations_dir()))
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
        except Exception as exc:
            raise DatabaseError(
                f"cannot upgrade the schema of {describe()}: {one_line(exc)}"
            ) from None
        finally:
            engine.dispose()
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [_MIGRATION_LOCK])


def require_pgvector(conn: Connection) -> None:
    """Enable pgvector, or say in one line why it cannot be and what to do."""
    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector'),
                  EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')"""
    ).fetchone()
    if row is not None and row[0]:
        return
    if row is None or not row[1]:
        raise DatabaseError(
            f"{describe()} lacks the pgvector extension (vector), which simsearch needs; install "
            "it on that server (https://github.com/pgvector/pgvector#installation, or run the "
            "pgvector/pgvector Docker image), or unset SIMSEARCH_DATABASE_URL to use the "
            "embedded server, which includes it"
        )
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege:
        raise DatabaseError(
            f"{describe()}: pgvector is installed but not enabled in database "
            f"{conn.info.dbname!r}, and user {conn.info.user!r} may not enable it; ask a "
            f"superuser to run: CREATE EXTENSION vector; in database {conn.info.dbname!r}"
        ) from None


def migrations_dir() -> Path:
    """Alembic's script directory, from the source tree or the installed package."""
    return Path(str(resources.files("simsearch.migrations")))
