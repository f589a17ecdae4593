"""Feature sets, images, the shard ledger and embeddings with a pgvector column.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(
        """
        CREATE TABLE feature_sets (
            id            serial PRIMARY KEY,
            name          text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
            dimension     integer NOT NULL CHECK (dimension BETWEEN 1 AND 16000),
            model         text,          -- "builtin:NAME" or the model file's absolute path
            model_sha256  text,
            preprocess    jsonb NOT NULL DEFAULT '{}'::jsonb,
            index_params  jsonb,         -- the ANN index's parameters, NULL when none is built
            created_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE images (
            object_id  text PRIMARY KEY
                       CHECK (octet_length(object_id) BETWEEN 1 AND 1024),
            path       text,
            bytes      bigint,
            width      integer,
            height     integer,
            added_at   timestamptz NOT NULL DEFAULT now(),
            meta       jsonb NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )
    op.execute(
        """
        CREATE TABLE shards (
            id              serial PRIMARY KEY,
            feature_set_id  integer NOT NULL REFERENCES feature_sets ON DELETE CASCADE,
            name            text NOT NULL,
            sha256          text NOT NULL,
            rows            integer NOT NULL,
            loaded_at       timestamptz NOT NULL DEFAULT now(),
            UNIQUE (feature_set_id, name)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE embeddings (
            feature_set_id  integer NOT NULL REFERENCES feature_sets ON DELETE CASCADE,
            object_id       text NOT NULL REFERENCES images ON DELETE CASCADE,
            shard_id        integer REFERENCES shards ON DELETE CASCADE,
            embedding       vector NOT NULL,
            PRIMARY KEY (feature_set_id, object_id)
        )
        """
    )
    # Keep vectors in the row (a 1280-d vector is 5 KB, past the 2 KB TOAST threshold):
    # an exact scan then reads no TOAST table. Larger vectors still go out of line.
    op.execute("ALTER TABLE embeddings ALTER COLUMN embedding SET STORAGE MAIN")
    op.execute("CREATE INDEX embeddings_shard_id ON embeddings (shard_id)")


def downgrade() -> None:
    op.execute("DROP TABLE embeddings, shards, images, feature_sets")
