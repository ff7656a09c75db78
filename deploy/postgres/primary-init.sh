#!/bin/sh
# The PostgreSQL primary of deploy/docker-compose.cluster.yml, on its first start
# (/docker-entrypoint-initdb.d): a role that may stream the WAL, and the standby's way in.
# Replication itself is set on the server's command line in the compose file.
set -o errexit -o nounset

psql --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
