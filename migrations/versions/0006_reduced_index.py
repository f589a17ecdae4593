"""A reduced (PCA) copy of high-dimensional vectors for the HNSW index; one recall default.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Feature sets of more than 256 dimensions are indexed on ``embeddings.reduced``, a PCA copy of
each vector (``simsearch/projection.py``; the projection is stored in ``projections``), and every
candidate is re-ranked by the exact distance of the full vector. At 1,000,000 x 1280 the index is
about a fifth of the full halfvec index and builds several times faster (docs/benchmarks.md).
``index_params->>'reduced'`` says which form a feature set's index has; an index built before
this migration keeps the full form and is used as before.

``simsearch_project(feature_set_id, vector)`` applies a feature set's projection in SQL, so that
``simsearch_knn`` walks the reduced index for SQL users too.

The recall knob: ``simsearch_knn`` searched with ef_search max(session, 100) while the CLI used
200. Now ``simsearch.ef_search`` (which ``simsearch query --ef`` sets) decides, else the session's
``hnsw.ef_search`` raised to the same default of 200.
"""

# ruff: noqa: E501  (SQL text reads better unwrapped)

import importlib.util
from pathlib import Path

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_PROJECT = r"""
CREATE FUNCTION simsearch_project(feature_set_id integer, query vector) RETURNS halfvec
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
    SELECT (SELECT array_agg(-((query - p.mean) <#> u.c) ORDER BY u.i)
            FROM unnest(p.components) WITH ORDINALITY AS u(c, i))::halfvec
    FROM projections p WHERE p.feature_set_id = simsearch_project.feature_set_id AND p.used
$fn$
"""

_KNN = r"""
CREATE OR REPLACE FUNCTION simsearch_knn(
    feature_set text, query vector, k integer,
    filter jsonb DEFAULT NULL, exact boolean DEFAULT false, exclude text DEFAULT NULL
) RETURNS TABLE (object_id text, distance double precision)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    fs_id integer;
    dim integer;
    indexed boolean;
    reduced integer;      -- the index is on a PCA copy of this many dimensions (or NULL)
    query_reduced halfvec;
    ef integer;
    conditions jsonb := simsearch_filter_conditions(filter);
    has_filter boolean := jsonb_array_length(conditions) > 0;
    clause text;          -- the filter, over images AS i
    not_self text := '';  -- simsearch_similar leaves the query image out
    total bigint;
    pool integer;
    sampled bigint;
    hits bigint;
    estimate double precision;
    pct double precision;
    ids text[];
    dists double precision[];
    old_ef text;
    old_iter text;
    old_max text;
    stmt text;
    line text;
    -- SET simsearch.explain = on: report the strategy and the plan as notices.
    explain boolean := coalesce(current_setting('simsearch.explain', true), '') IN ('on', 'true', '1');
    -- Below this many estimated matches an exact scan of just the matching rows is both
    -- faster than walking the graph and exact (see docs/benchmarks.md, "Filtered search").
    exact_below bigint := coalesce(nullif(current_setting('simsearch.exact_below', true), '')::bigint, 10000);
BEGIN
    SELECT f.id, f.dimension INTO fs_id, dim FROM feature_sets f WHERE f.name = feature_set;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'simsearch: no feature set named %', quote_literal(coalesce(feature_set, 'NULL'))
            USING ERRCODE = '22023';
    END IF;
    IF query IS NULL THEN
        RAISE EXCEPTION 'simsearch: expected a query vector, found NULL' USING ERRCODE = '22023';
    END IF;
    IF vector_dims(query) <> dim THEN
        RAISE EXCEPTION 'simsearch: the query vector has dimension %; feature set % holds dimension %',
            vector_dims(query), quote_literal(feature_set), dim USING ERRCODE = '22023';
    END IF;
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'simsearch: expected k >= 1, found %', coalesce(k::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    clause := simsearch_filter_sql(conditions, 4);
    IF exclude IS NOT NULL THEN
        not_self := ' AND e.object_id <> $5';
    END IF;
    indexed := coalesce((SELECT x.indisvalid FROM pg_index x
                         WHERE x.indexrelid = to_regclass(format('embeddings_hnsw_%s', fs_id))), false);
    SELECT (f.index_params->>'reduced')::integer INTO reduced FROM feature_sets f WHERE f.id = fs_id;
    SELECT coalesce(sum(s.rows - s.deleted), 0) INTO total FROM shards s WHERE s.feature_set_id = fs_id;

    IF indexed AND NOT exact AND has_filter THEN
        -- How many rows match, estimated from a sample of about 3,000 images (a few ms).
        -- The planner cannot estimate conditions on jsonb keys, so we do not ask it.
        SELECT CASE WHEN c.reltuples <= 3000 THEN 100 ELSE 300000 / c.reltuples END INTO pct
        FROM pg_class c WHERE c.oid = 'images'::regclass;
        EXECUTE format('SELECT count(*) FILTER (WHERE true %s), count(*)
                        FROM images i TABLESAMPLE SYSTEM ($1) REPEATABLE (0)', clause)
            INTO hits, sampled USING least(coalesce(pct, 100), 100), NULL, NULL, conditions;
        estimate := CASE WHEN sampled = 0 THEN 0 ELSE hits::float8 / sampled * total END;
        IF estimate < exact_below THEN
            exact := true;
        END IF;
    END IF;

    -- The recall knob: simsearch.ef_search when set (`simsearch query --ef` sets it), else
    -- hnsw.ef_search raised to simsearch's default of 200; never past pgvector's 1000. A k above
    -- what an index scan can yield is answered exactly.
    old_ef := current_setting('hnsw.ef_search');
    ef := least(greatest(coalesce(nullif(current_setting('simsearch.ef_search', true), '')::integer,
                                  greatest(old_ef::integer, 200)), k), 1000);
    IF k > 1000 THEN
        exact := true;
    END IF;

    IF indexed AND NOT exact THEN
        pool := least(greatest(k, 100), ef);
        old_iter := current_setting('hnsw.iterative_scan');
        old_max := current_setting('hnsw.max_scan_tuples');
        PERFORM set_config('hnsw.ef_search', ef::text, true);
        IF reduced IS NOT NULL THEN
            query_reduced := simsearch_project(fs_id, query);
        END IF;
        IF has_filter THEN
            -- Keep walking the graph until `pool` candidates pass the filter (pgvector 0.8
            -- iterative scan); the exact re-rank below restores strict order, so relaxed
            -- order costs nothing. Allow four times the tuples the estimate says it takes.
            PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
            PERFORM set_config('hnsw.max_scan_tuples',
                least(greatest(old_max::bigint, (4 * pool * total / greatest(estimate, 1))::bigint),
                      2147483647)::text, true);
        END IF;
        -- The filter is a scalar subquery per candidate, not a join: a join lets the planner
        -- (which guesses jsonb conditions at 0.1%) trade the index for a scan and a sort.
        stmt := format(
            'SELECT object_id, distance FROM (
               SELECT c.object_id, (c.embedding <-> $1)::float8 AS distance FROM (
                 SELECT e.object_id, e.embedding FROM embeddings e
                 WHERE e.feature_set_id = %s %s %s
                 ORDER BY %s
                 LIMIT $2) AS c) AS r
             ORDER BY distance, object_id LIMIT $3',
            fs_id, not_self,
            CASE WHEN has_filter THEN format(
                ' AND (SELECT true FROM images i WHERE i.object_id = e.object_id %s)', clause) ELSE '' END,
            CASE WHEN reduced IS NULL THEN format('e.embedding::halfvec(%s) <-> $1::halfvec(%s)', dim, dim)
                 ELSE format('e.reduced::halfvec(%s) <-> $6::halfvec(%s)', reduced, reduced) END);
        IF explain THEN
            RAISE NOTICE 'simsearch: index scan, % rows estimated to match', coalesce(round(estimate)::text, 'all');
            FOR line IN EXECUTE 'EXPLAIN ' || stmt USING query, pool, k, conditions, exclude, query_reduced LOOP
                RAISE NOTICE '%', line;
            END LOOP;
        END IF;
        EXECUTE format('SELECT array_agg(object_id ORDER BY distance, object_id),
                               array_agg(distance ORDER BY distance, object_id) FROM (%s) AS t', stmt)
            INTO ids, dists USING query, pool, k, conditions, exclude, query_reduced;
        PERFORM set_config('hnsw.ef_search', old_ef, true);
        PERFORM set_config('hnsw.iterative_scan', old_iter, true);
        PERFORM set_config('hnsw.max_scan_tuples', old_max, true);
        IF coalesce(cardinality(ids), 0) >= k THEN
            RETURN QUERY SELECT * FROM unnest(ids, dists);
            RETURN;
        END IF;
        -- The index ran out before k rows passed the filter: answer exactly instead, so the
        -- caller gets k rows whenever k rows match.
    END IF;

    stmt := format(
        'SELECT e.object_id, (e.embedding <-> $1)::float8 AS distance FROM embeddings e
         %s
         WHERE e.feature_set_id = %s %s %s
         ORDER BY distance, e.object_id LIMIT $3',
        CASE WHEN has_filter THEN 'JOIN images i ON i.object_id = e.object_id' ELSE '' END,
        fs_id, not_self, clause);
    IF explain THEN
        RAISE NOTICE 'simsearch: exact scan, % rows estimated to match', coalesce(round(estimate)::text, 'all');
        FOR line IN EXECUTE 'EXPLAIN ' || stmt USING query, NULL::integer, k, conditions, exclude LOOP
            RAISE NOTICE '%', line;
        END LOOP;
    END IF;
    RETURN QUERY EXECUTE stmt USING query, NULL::integer, k, conditions, exclude;
END
$fn$
"""


def _knn_0005() -> str:
    """simsearch_knn as migration 0005 left it (to restore on downgrade)."""
    path = Path(__file__).with_name("0005_image_files.py")
    spec = importlib.util.spec_from_file_location("simsearch_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module._knn_0005())


def upgrade() -> None:
    # No default and nullable: adding the column rewrites nothing.
    op.execute("ALTER TABLE embeddings ADD COLUMN reduced halfvec")
    op.execute(
        """
        CREATE TABLE projections (
            feature_set_id  integer PRIMARY KEY REFERENCES feature_sets ON DELETE CASCADE,
            mean            vector NOT NULL,
            components      vector[] NOT NULL,  -- d rows of D, largest variance first
            fitted_rows     integer NOT NULL,
            -- projection.check's recall@10 on held-out rows; below 0.99 the set keeps the
            -- full index, and the projection is kept only as that decision.
            check_recall    real NOT NULL,
            used            boolean NOT NULL,
            fitted_at       timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(_PROJECT)
    op.execute(_KNN)


def downgrade() -> None:
    op.execute(_knn_0005())
    op.execute("DROP FUNCTION simsearch_project(integer, vector)")
    op.execute("DROP TABLE projections")
    op.execute("ALTER TABLE embeddings DROP COLUMN reduced")
