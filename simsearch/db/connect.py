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

import psycopg

from .. import config
from ..errors import DatabaseError, one_line, redact
from . import embedded
from .feature_sets import Connection

# The newest migration this code knows; tests hold it equal to Alembic's head.
SCHEMA_REVISION = "0007"
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007")
_MIGRATION_LOCK = 7_411_001  # pg_advisory_lock key: one schema upgrade at a time


def conninfo() -> str:
    """The configured server: SIMSEARCH_DATABASE_URL, or the embedded one."""
    url = config.database_url()
    if url is None:
        return embedded.conninfo(config.home())
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
def connect(migrate: bool = True) -> Iterator[Connection]:
    """An autocommit connection with pgvector registered and the schema current."""
    try:
        conn = psycopg.connect(conninfo(), connect_timeout=10, autocommit=True)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to {describe()}: {one_line(exc)}") from None
    with conn:
        if migrate:
            ensure_schema(conn)
        configure(conn)
        yield conn


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
