#!/bin/sh
# Creates the role Grafana's PostgreSQL datasource logs in with: it may read the
# exporter's tables and nothing else. Postgres's image runs this once, when it
# initialises an empty data volume (docker-entrypoint-initdb.d); the exporter creates
# its tables later, so SELECT is granted by default privileges.
#
# Environment: POSTGRES_USER and POSTGRES_DB (the owner and database of the exporter),
# GRAFANA_DB_USER and GRAFANA_DB_PASSWORD. psql's usual PG* variables pick the server.
set -eu

: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}" "${GRAFANA_DB_USER:?}" "${GRAFANA_DB_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set reader="$GRAFANA_DB_USER" --set password="$GRAFANA_DB_PASSWORD" \
  --set owner="$POSTGRES_USER" --set db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"reader" LOGIN PASSWORD :'password';
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
SQL
