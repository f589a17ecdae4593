"""simsearch_knn's settings reach Citus workers: SET LOCAL instead of set_config().

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

On a Citus coordinator, simsearch_knn (migration 0002) runs on the coordinator and its dynamic
SQL fans out to every shard. Citus forwards ``SET LOCAL`` statements to the workers taking part
in the transaction when ``citus.propagate_set_commands`` is 'local', but never a
``set_config()`` call: the shards searched at pgvector's defaults (ef_search 40, no iterative
scan) whatever the function asked for. ``simsearch_set_local`` issues the setting as a
``SET LOCAL`` statement, which on a plain PostgreSQL server does what ``set_config(..., true)``
did (an unknown ``citus.*`` setting there is a harmless placeholder).

With ``SET simsearch.explain = on`` the plan is not shown on Citus: EXPLAIN of a search with
distributed subplans, in a transaction that already read a reference table on the coordinator,
aborts the transaction. ``simsearch_explain`` says so in a notice instead (the strategy notice
stays).

The candidates' exact distances are computed in the index walk's own query, so that on Citus
each shard returns ids and distances rather than its candidates' vectors (5 KB each at
1280-d); the coordinator merges and re-ranks them (the Python statement in simsearch/db/knn.py
has the same shape).

The filtered path's sample size also read ``pg_class.reltuples`` of ``images``, which on a
coordinator is an empty shell's (0): it then sampled every image on every query. The feature
set's row count stands in when it is larger.

Only ``simsearch_knn`` changes (same signature, same answers); it keeps what 0005 (k above
1000 scans exactly, ef_search within 1..1000) and 0006 (the reduced index, simsearch.ef_search
and its default of 200) made of it.
"""

# ruff: noqa: E501  (SQL text reads better unwrapped)

import importlib.util
from pathlib import Path

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_SET_LOCAL = r"""
CREATE FUNCTION simsearch_set_local(name text, value text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
-- SET LOCAL name = value, as a statement, so that Citus forwards it to its workers.
BEGIN
    IF name !~ '^[a-z_]+(\.[a-z_]+)?$' THEN
        RAISE EXCEPTION 'simsearch: expected a setting name, found %', quote_literal(name)
            USING ERRCODE = '22023';
    END IF;
    EXECUTE 'SET LOCAL citus.propagate_set_commands = ''local''';
    EXECUTE format('SET LOCAL %s = %L', name, value);
END
$fn$
"""

_EXPLAIN = r"""
CREATE FUNCTION simsearch_explain(
    stmt text, query vector, pool integer, k integer, conditions jsonb, exclude text,
    walked halfvec DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
-- simsearch.explain: the plan of a search statement as notices (not on Citus; see above).
DECLARE
    line text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE NOTICE 'simsearch: plan not shown on Citus (EXPLAIN would abort this transaction)';
        RETURN;
    END IF;
    FOR line IN EXECUTE 'EXPLAIN ' || stmt USING query, pool, k, conditions, exclude, walked LOOP
        RAISE NOTICE '%', line;
    END LOOP;
END
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
        -- On Citus the coordinator's images table is an empty shell (reltuples 0): the
        -- feature set's row count stands in for the number of images there.
        SELECT CASE WHEN n <= 3000 THEN 100 ELSE 300000 / n END INTO pct
        FROM (SELECT greatest(c.reltuples, total) AS n FROM pg_class c
              WHERE c.oid = 'images'::regclass) AS sized;
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
        PERFORM simsearch_set_local('hnsw.ef_search', ef::text);
        IF reduced IS NOT NULL THEN
            query_reduced := simsearch_project(fs_id, query);
        END IF;
        IF has_filter THEN
            -- Keep walking the graph until `pool` candidates pass the filter (pgvector 0.8
            -- iterative scan); the exact re-rank below restores strict order, so relaxed
            -- order costs nothing. Allow four times the tuples the estimate says it takes.
            PERFORM simsearch_set_local('hnsw.iterative_scan', 'relaxed_order');
            PERFORM simsearch_set_local('hnsw.max_scan_tuples',
                least(greatest(old_max::bigint, (4 * pool * total / greatest(estimate, 1))::bigint),
                      2147483647)::text);
        END IF;
        -- The filter is a scalar subquery per candidate, not a join: a join lets the planner
        -- (which guesses jsonb conditions at 0.1%) trade the index for a scan and a sort.
        stmt := format(
            'SELECT object_id, distance FROM (
               SELECT e.object_id, (e.embedding <-> $1)::float8 AS distance FROM embeddings e
               WHERE e.feature_set_id = %s %s %s
               ORDER BY %s
               LIMIT $2) AS c
             ORDER BY distance, object_id LIMIT $3',
            fs_id, not_self,
            CASE WHEN has_filter THEN format(
                ' AND (SELECT true FROM images i WHERE i.object_id = e.object_id %s)', clause) ELSE '' END,
            CASE WHEN reduced IS NULL THEN format('e.embedding::halfvec(%s) <-> $1::halfvec(%s)', dim, dim)
                 ELSE format('e.reduced::halfvec(%s) <-> $6::halfvec(%s)', reduced, reduced) END);
        IF explain THEN
            RAISE NOTICE 'simsearch: index scan, % rows estimated to match', coalesce(round(estimate)::text, 'all');
            PERFORM simsearch_explain(stmt, query, pool, k, conditions, exclude, query_reduced);
        END IF;
        EXECUTE format('SELECT array_agg(object_id ORDER BY distance, object_id),
                               array_agg(distance ORDER BY distance, object_id) FROM (%s) AS t', stmt)
            INTO ids, dists USING query, pool, k, conditions, exclude, query_reduced;
        PERFORM simsearch_set_local('hnsw.ef_search', old_ef);
        PERFORM simsearch_set_local('hnsw.iterative_scan', old_iter);
        PERFORM simsearch_set_local('hnsw.max_scan_tuples', old_max);
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
        PERFORM simsearch_explain(stmt, query, NULL::integer, k, conditions, exclude);
    END IF;
    RETURN QUERY EXECUTE stmt USING query, NULL::integer, k, conditions, exclude;
END
$fn$
"""


def upgrade() -> None:
    op.execute(_SET_LOCAL)
    op.execute(_EXPLAIN)
    op.execute(_KNN)


def downgrade() -> None:
    # 0006's simsearch_knn, with set_config(); CREATE OR REPLACE keeps its dependants.
    spec = importlib.util.spec_from_file_location(
        "simsearch_migration_0006", Path(__file__).with_name("0006_reduced_index.py")
    )
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(previous._KNN)
    op.execute(
        "DROP FUNCTION simsearch_explain(text, vector, integer, integer, jsonb, text, halfvec)"
    )
    op.execute("DROP FUNCTION simsearch_set_local(text, text)")
