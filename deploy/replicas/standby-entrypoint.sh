#!/usr/bin/env bash
# The standby's entrypoint: on the first start clone the primary with pg_basebackup -R (which
# writes standby.signal and primary_conninfo, password included, into the copy), then run
# PostgreSQL as a hot standby. Later starts find the copy and just run it.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do
    echo "standby: waiting for $PRIMARY_HOST:$PRIMARY_PORT" >&2
    sleep 1
  done
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup \
    --host="$PRIMARY_HOST" --port="$PRIMARY_PORT" --username="$REPLICATION_USER" \
    --pgdata="$PGDATA" --write-recovery-conf --wal-method=stream --checkpoint=fast \
    --slot="$REPLICATION_SLOT" --progress
fi
exec postgres -D "$PGDATA" -c hot_standby=on
