"""The SQL surface: filterable knn functions, a GIN index on image metadata, ledger deletions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

The functions build their queries with ``format()``: the only things spliced into SQL text
are integers read from ``feature_sets`` (the partial HNSW index's predicate and the halfvec
cast must appear literally for the planner to match the index), column names and operators
taken from fixed whitelists, and positions in the filter array. Everything the caller
supplies (feature-set names, object ids, filter keys and values, the query vector) reaches
the query as a bound parameter through ``EXECUTE ... USING``.
"""

# ruff: noqa: E501  (SQL text reads better unwrapped)

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_FILTER_CONDITIONS = r"""
CREATE FUNCTION simsearch_filter_conditions(filter jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $fn$
-- {"color": "red", "width": {">=": 1024}} -> [{"key": "color", "op": "=", "value": "red"}, ...]
-- Errors name what was expected and what was found.
DECLARE
    entry record;
    cond record;
    result jsonb := '[]'::jsonb;
BEGIN
    IF filter IS NULL OR filter = '{}'::jsonb THEN
        RETURN result;
    END IF;
    IF jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION 'simsearch: expected the filter to be a JSON object such as {"color": "red"}, found %',
            jsonb_typeof(filter) USING ERRCODE = '22023';
    END IF;
    FOR entry IN SELECT key, value FROM jsonb_each(filter) ORDER BY key LOOP
        IF octet_length(entry.key) NOT BETWEEN 1 AND 200 THEN
            RAISE EXCEPTION 'simsearch: expected filter keys of 1 to 200 bytes, found % bytes',
                octet_length(entry.key) USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(entry.value) = 'object' THEN
            IF entry.value = '{}'::jsonb THEN
                RAISE EXCEPTION 'simsearch: filter key % has no conditions', quote_literal(entry.key)
                    USING ERRCODE = '22023';
            END IF;
            FOR cond IN SELECT key, value FROM jsonb_each(entry.value) ORDER BY key LOOP
                IF cond.key NOT IN ('=', '!=', '<', '<=', '>', '>=') THEN
                    RAISE EXCEPTION 'simsearch: expected an operator =, !=, <, <=, >, >= for filter key %, found %',
                        quote_literal(entry.key), quote_literal(cond.key) USING ERRCODE = '22023';
                END IF;
                result := result || jsonb_build_array(
                    jsonb_build_object('key', entry.key, 'op', cond.key, 'value', cond.value));
            END LOOP;
        ELSE
            result := result || jsonb_build_array(
                jsonb_build_object('key', entry.key, 'op', '=', 'value', entry.value));
        END IF;
    END LOOP;
    RETURN result;
END
$fn$
"""

_FILTER_SQL = r"""
CREATE FUNCTION simsearch_filter_sql(conditions jsonb, param integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
-- The WHERE-clause text for conditions (see simsearch_filter_conditions) over images AS i.
-- Keys and values are read from the bound parameter $<param> at run time, never spliced in.
DECLARE
    clause text := '';
    cond jsonb;
    pos integer := 0;
    col text;
    typ text;
    op text;
    ref text;
BEGIN
    FOR cond IN SELECT value FROM jsonb_array_elements(conditions) LOOP
        op := cond->>'op';
        IF op NOT IN ('=', '!=', '<', '<=', '>', '>=') THEN  -- never trust the caller's array
            RAISE EXCEPTION 'simsearch: unknown filter operator %', quote_literal(op) USING ERRCODE = '22023';
        END IF;
        ref := format('($%s->%s)', param, pos);
        col := CASE cond->>'key' WHEN 'object_id' THEN 'object_id' WHEN 'path' THEN 'path'
                   WHEN 'bytes' THEN 'bytes' WHEN 'width' THEN 'width' WHEN 'height' THEN 'height'
                   WHEN 'added_at' THEN 'added_at' END;
        IF col IS NOT NULL THEN
            typ := CASE col WHEN 'object_id' THEN 'text' WHEN 'path' THEN 'text'
                       WHEN 'added_at' THEN 'timestamptz' ELSE 'bigint' END;
            IF jsonb_typeof(cond->'value') NOT IN ('string', 'number') THEN
                RAISE EXCEPTION 'simsearch: expected a % value for filter key %, found %',
                    typ, quote_literal(col), cond->'value' USING ERRCODE = '22023';
            END IF;
            IF typ = 'bigint' AND (jsonb_typeof(cond->'value') <> 'number'
                                   OR (cond->>'value')::numeric <> trunc((cond->>'value')::numeric)) THEN
                RAISE EXCEPTION 'simsearch: expected a whole number for filter key %, found %',
                    quote_literal(col), cond->'value' USING ERRCODE = '22023';
            END IF;
            clause := clause || format(' AND i.%I %s (%s->>''value'')::%s', col, op, ref, typ);
        ELSIF op = '=' THEN
            -- Containment, so a GIN index on meta serves it; arrays match by containment.
            clause := clause || format(' AND i.meta @> jsonb_build_object(%s->>''key'', %s->''value'')', ref, ref);
        ELSIF op = '!=' THEN
            clause := clause || format(' AND NOT i.meta @> jsonb_build_object(%s->>''key'', %s->''value'')', ref, ref);
        ELSE
            -- jsonb orders numbers numerically and strings as text (ISO dates sort right);
            -- the type check keeps e.g. true or "abc" out of a numeric range.
            clause := clause || format(
                ' AND jsonb_typeof(i.meta->(%1$s->>''key'')) = jsonb_typeof(%1$s->''value'')'
                ' AND i.meta->(%1$s->>''key'') %2$s %1$s->''value''', ref, op);
        END IF;
        pos := pos + 1;
    END LOOP;
    RETURN clause;
END
$fn$
"""

_KNN = r"""
CREATE FUNCTION simsearch_knn(
    feature_set text, query vector, k integer,
    filter jsonb DEFAULT NULL, exact boolean DEFAULT false, exclude text DEFAULT NULL
) RETURNS TABLE (object_id text, distance double precision)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    fs_id integer;
    dim integer;
    indexed boolean;
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

    IF indexed AND NOT exact THEN
        pool := greatest(k, 100);
        old_ef := current_setting('hnsw.ef_search');
        old_iter := current_setting('hnsw.iterative_scan');
        old_max := current_setting('hnsw.max_scan_tuples');
        PERFORM set_config('hnsw.ef_search', greatest(old_ef::integer, pool)::text, true);
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
                 ORDER BY e.embedding::halfvec(%s) <-> $1::halfvec(%s)
                 LIMIT $2) AS c) AS r
             ORDER BY distance, object_id LIMIT $3',
            fs_id, not_self,
            CASE WHEN has_filter THEN format(
                ' AND (SELECT true FROM images i WHERE i.object_id = e.object_id %s)', clause) ELSE '' END,
            dim, dim);
        IF explain THEN
            RAISE NOTICE 'simsearch: index scan, % rows estimated to match', coalesce(round(estimate)::text, 'all');
            FOR line IN EXECUTE 'EXPLAIN ' || stmt USING query, pool, k, conditions, exclude LOOP
                RAISE NOTICE '%', line;
            END LOOP;
        END IF;
        EXECUTE format('SELECT array_agg(object_id ORDER BY distance, object_id),
                               array_agg(distance ORDER BY distance, object_id) FROM (%s) AS t', stmt)
            INTO ids, dists USING query, pool, k, conditions, exclude;
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

_VECTOR = r"""
CREATE FUNCTION simsearch_vector(feature_set text, object_id text) RETURNS vector
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    found vector;
BEGIN
    SELECT e.embedding INTO found FROM embeddings e JOIN feature_sets f ON f.id = e.feature_set_id
    WHERE f.name = simsearch_vector.feature_set AND e.object_id = simsearch_vector.object_id;
    IF found IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM feature_sets f WHERE f.name = simsearch_vector.feature_set) THEN
            RAISE EXCEPTION 'simsearch: no feature set named %',
                quote_literal(coalesce(simsearch_vector.feature_set, 'NULL')) USING ERRCODE = '22023';
        END IF;
        RAISE EXCEPTION 'simsearch: feature set % has no object id %', quote_literal(simsearch_vector.feature_set),
            quote_literal(coalesce(simsearch_vector.object_id, 'NULL')) USING ERRCODE = '22023';
    END IF;
    RETURN found;
END
$fn$
"""

_SIMILAR = r"""
CREATE FUNCTION simsearch_similar(
    feature_set text, object_id text, k integer,
    filter jsonb DEFAULT NULL, exact boolean DEFAULT false
) RETURNS TABLE (object_id text, distance double precision)
LANGUAGE sql VOLATILE AS $fn$
    SELECT * FROM simsearch_knn($1, simsearch_vector($1, $2), $3, $4, $5, $2)
$fn$
"""


def upgrade() -> None:
    # Rows deleted from a shard after loading: the ledger still says what the files held
    # (rows, sha256), and a re-ingest of unchanged files skips the shard instead of
    # resurrecting what was deleted.
    op.execute("ALTER TABLE shards ADD COLUMN deleted integer NOT NULL DEFAULT 0")
    # Equality filters on metadata are containment tests (meta @> '{"k": v}').
    op.execute("CREATE INDEX images_meta ON images USING gin (meta jsonb_path_ops)")
    for statement in (_FILTER_CONDITIONS, _FILTER_SQL, _KNN, _VECTOR, _SIMILAR):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION simsearch_similar(text, text, integer, jsonb, boolean)")
    op.execute("DROP FUNCTION simsearch_vector(text, text)")
    op.execute("DROP FUNCTION simsearch_knn(text, vector, integer, jsonb, boolean, text)")
    op.execute("DROP FUNCTION simsearch_filter_sql(jsonb, integer)")
    op.execute("DROP FUNCTION simsearch_filter_conditions(jsonb)")
    op.execute("DROP INDEX images_meta")
    op.execute("ALTER TABLE shards DROP COLUMN deleted")
