"""Everything that speaks SQL: connecting and migrating, the embedded server, binary COPY,
feature sets and the shard ledger, kNN, the HNSW index, images and their metadata.

Nothing outside this package and ``migrations/`` holds SQL text. Identifiers that cannot be
bound as parameters (a feature set's id in a partial index's predicate, a vector dimension in a
cast) are integers read from simsearch's own tables and composed with ``psycopg.sql.Literal``;
every value that comes from a user is a bound parameter.

Connections are in autocommit mode: a read is one statement and holds no transaction open, so
read helpers never commit or roll back; whatever writes, or needs ``SET LOCAL``, runs inside
``with conn.transaction()``.
"""
