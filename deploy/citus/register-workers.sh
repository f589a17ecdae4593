#!/usr/bin/env bash
# Run once by the `register` service after every node is healthy: tell the coordinator its own
# address and add the workers. Both calls are idempotent (citus_add_node returns the existing
# node's id), so re-running `docker compose up` is harmless.
#   COORDINATOR_HOST, COORDINATOR_PORT (5432)   where the coordinator is, as the workers see it
#   WORKER_HOSTS                                "host[:port] ..." (port 5432 if not given)
#   POSTGRES_USER, POSTGRES_DB, PGPASSWORD      the login used on every node
set -euo pipefail
port="${COORDINATOR_PORT:-5432}"
sql() {
  psql -X -q -v ON_ERROR_STOP=1 -h "$COORDINATOR_HOST" -p "$port" -U "$POSTGRES_USER" \
    -d "$POSTGRES_DB" "$@"
}
sql -c "SELECT citus_set_coordinator_host('$COORDINATOR_HOST', $port)"
for worker in $WORKER_HOSTS; do
  host="${worker%%:*}"
  worker_port=5432
  if [ "$host" != "$worker" ]; then worker_port="${worker##*:}"; fi
  sql -c "SELECT citus_add_node('$host', $worker_port)"
done
sql -c "SELECT nodename, nodeport, noderole FROM pg_dist_node ORDER BY nodeid"
