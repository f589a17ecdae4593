-- Run once at each node's first start, in POSTGRES_DB, after Citus' own 001 script.
CREATE EXTENSION IF NOT EXISTS vector;
