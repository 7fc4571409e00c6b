#!/bin/sh
# First start of the postgres container only (empty data directory), run by its entrypoint as the
# superuser: the owner role and the database it owns (migrations run as this role), and the app role,
# which logs in, is no superuser, cannot bypass row-level security and owns nothing. Neither may
# create roles: on PostgreSQL 15 a CREATEROLE role can grant itself pg_execute_server_program and run
# programs as the server's OS user (the README's manual install makes the same roles). The migrations
# grant the app role its table privileges. Names can be changed with NYXCORE_DB_NAME,
# NYXCORE_DB_OWNER and NYXCORE_APP_ROLE; the passwords must match DATABASE_URL and
# MIGRATION_DATABASE_URL in .env.
set -eu

: "${NYXCORE_DB_OWNER_PASSWORD:?set NYXCORE_DB_OWNER_PASSWORD in .env}"
: "${NYXCORE_APP_PASSWORD:?set NYXCORE_APP_PASSWORD in .env}"

# psql fills in :"name" (an identifier) and :'value' (a literal) itself, quoted, from --set.
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
  --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  --set=db="${NYXCORE_DB_NAME:-nyxcore}" \
  --set=owner="${NYXCORE_DB_OWNER:-nyxcore_owner}" \
  --set=owner_password="$NYXCORE_DB_OWNER_PASSWORD" \
  --set=app="${NYXCORE_APP_ROLE:-nyxcore_app}" \
  --set=app_password="$NYXCORE_APP_PASSWORD" <<'SQL'
CREATE ROLE :"owner" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'owner_password';
CREATE ROLE :"app" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
CREATE DATABASE :"db" OWNER :"owner";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"app";
SQL
echo "nyxcore: created database ${NYXCORE_DB_NAME:-nyxcore}, owner ${NYXCORE_DB_OWNER:-nyxcore_owner}, app role ${NYXCORE_APP_ROLE:-nyxcore_app}"
