"""Alembic environment: simsearch hands over an open connection; plain `alembic` builds one."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
else:
    # `alembic -c alembic.ini upgrade head` from the repository: same server simsearch uses.
    import psycopg
    from sqlalchemy import create_engine

    from simsearch.db.connect import conninfo

    target = conninfo()
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(target))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
