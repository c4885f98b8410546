#!/usr/bin/env bash
# Writes the compose deployment's secrets under deploy/compose/secrets/ (git ignores them):
# the JWT secret, PostgreSQL's password and the two database URLs that carry it. Existing
# files are kept, so running it again changes nothing.
set -euo pipefail
dir="$(dirname "$0")/secrets"
mkdir -p "$dir"
cd "$dir"
[ -s jwt-secret ] || openssl rand -base64 48 > jwt-secret
[ -s postgres-password ] || openssl rand -hex 24 > postgres-password
password="$(cat postgres-password)"
[ -s auth-database-url ] || echo "postgres://todo:${password}@postgres:5432/todo_auth" > auth-database-url
[ -s task-database-url ] || echo "postgres://todo:${password}@postgres:5432/todo_tasks" > task-database-url
# Readable by the containers' users, which are not this host's: keep this directory on a
# host only its operators can log in to, or use your orchestrator's secret store instead.
chmod 0700 . 2>/dev/null || true
chmod 0644 jwt-secret postgres-password auth-database-url task-database-url
echo "secrets in $PWD"
