#!/usr/bin/env bash
# Run once by the postgres image at the primary's first start (docker-entrypoint-initdb.d), as
# the postgres user, against the initialising server: the role the standby replicates as, a
# physical slot so the primary keeps the WAL a disconnected standby still needs, and the
# pg_hba.conf line that lets that role open replication connections ("all" in pg_hba.conf does
# not cover the replication pseudo-database).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=role="$REPLICATION_USER" --set=password="$REPLICATION_PASSWORD" \
  --set=slot="$REPLICATION_SLOT" <<'SQL'
CREATE ROLE :"role" WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot(:'slot');
SQL
echo "host replication $REPLICATION_USER all scram-sha-256" >>"$PGDATA/pg_hba.conf"
