#!/usr/bin/env bash
# Durable one-row inserts with pgbench, with and without a NOTIFY in the same transaction
# (docs/performance.md, Fix 7). Writes bench/results/notify-lock-<time>.json.
#   bench/notify-lock.sh [postgres-url-of-a-server] [seconds] [clients]
set -euo pipefail
server=${1:-postgresql://postgres@127.0.0.1:5432}
seconds=${2:-8}
clients=${3:-16}
db="notify_lock_$$"
work=$(mktemp -d)
trap 'psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1; rm -rf "$work"' EXIT
psql -q "$server/postgres" -c "CREATE DATABASE $db"
psql -q "$server/$db" -c "CREATE TABLE t (id bigserial PRIMARY KEY, payload text NOT NULL)"
printf "INSERT INTO t (payload) VALUES ('x');\n" > "$work/insert.sql"
printf "BEGIN;\nINSERT INTO t (payload) VALUES ('x');\nSELECT pg_notify('bench', '');\nCOMMIT;\n" > "$work/notify_inside.sql"
printf "INSERT INTO t (payload) VALUES ('x');\nSELECT pg_notify('bench', '');\n" > "$work/notify_after.sql"
results=()
for round in 1 2; do
  for script in insert notify_inside notify_after; do
    tps=$(pgbench -n -c "$clients" -j 2 -T "$seconds" -f "$work/$script.sql" "$server/$db" 2>/dev/null \
      | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    echo "$script round $round: $tps tps" >&2
    results+=("{\"script\": \"$script\", \"round\": $round, \"tps\": $tps}")
  done
done
out="$(dirname "$0")/results/notify-lock-$(date -u +%Y-%m-%dT%H%M%S).json"
{
  echo "{"
  echo "  \"benchmark\": \"notify-lock\","
  echo "  \"at\": \"$(date -u +%FT%TZ)\","
  echo "  \"postgres\": \"$(psql -Atq "$server/postgres" -c 'SHOW server_version')\","
  echo "  \"synchronous_commit\": \"$(psql -Atq "$server/postgres" -c 'SHOW synchronous_commit')\","
  echo "  \"clients\": $clients, \"seconds\": $seconds, \"cpus\": $(nproc),"
  echo "  \"scripts\": {\"insert\": \"one INSERT (autocommit)\", \"notify_inside\": \"BEGIN; INSERT; SELECT pg_notify; COMMIT\", \"notify_after\": \"INSERT (autocommit), then SELECT pg_notify (autocommit)\"},"
  echo "  \"runs\": ["
  (IFS=,; echo "    ${results[*]}")
  echo "  ]"
  echo "}"
} > "$out"
echo "written to $out" >&2
