#!/bin/sh
# The PostgreSQL standby of deploy/docker-compose.cluster.yml. On its first start (an
# empty data folder) it copies the primary with pg_basebackup -R, which also writes the
# connection back to the primary and standby.signal; then it runs as a hot standby,
# streaming the primary's WAL. Promoted by hand or by your failover tooling:
#   docker compose -f deploy/docker-compose.cluster.yml exec -u postgres postgres-standby pg_ctl promote
set -o errexit -o nounset

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready --host "$PRIMARY_HOST" --port 5432 --quiet; do
        echo "standby: waiting for the primary at $PRIMARY_HOST"
        sleep 2
    done
    PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup --host "$PRIMARY_HOST" --port 5432 \
        --username replicator --pgdata "$PGDATA" --write-recovery-conf --wal-method stream \
        --checkpoint fast --progress
    chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on
