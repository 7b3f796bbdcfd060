#!/bin/sh
# Run once by the postgres image when its volume is new, as the superuser POSTGRES_USER. Row-level
# security (core/tenancy.py) binds only a role that neither owns the tables nor is a superuser: the owner
# role runs the migrations (compose's migrate service), the application role everything else.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner_password="${RECSYS_OWNER_PASSWORD:-recsys_owner}" -v app_password="${RECSYS_APP_PASSWORD:-recsys_app}" <<'SQL'
CREATE ROLE recsys_owner LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD :'owner_password';
CREATE ROLE recsys_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB PASSWORD :'app_password';
CREATE EXTENSION IF NOT EXISTS vector;
SELECT format('ALTER DATABASE %I OWNER TO recsys_owner', current_database()) \gexec
SQL
