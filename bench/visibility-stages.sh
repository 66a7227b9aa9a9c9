#!/usr/bin/env bash
# Where a visibility run's backlog sits (docs/performance.md, "Ack → visible, stage by
# stage"): runs `tillstream-bench visibility` and, while it runs, samples its databases
# about three times a second: orders in the event store, how far the relay's checkpoint is,
# and orders in the read model. Writes bench/results/visibility-stages-<time>.json.
#   bench/visibility-stages.sh [rate] [seconds]      (release binaries built first)
set -euo pipefail
rate=${1:-1000}
seconds=${2:-10}
here=$(cd "$(dirname "$0")" && pwd)
bench="$here/../target/release/tillstream-bench"
server=${TILLSTREAM_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
server=${server%/*}
psql_at() { psql -Atq "$server/$1" -c "$2" 2>/dev/null || true; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
known=$(psql_at postgres "SELECT string_agg(datname, ' ') FROM pg_database")
"$bench" --out "$work" visibility --rate "$rate" --duration "$seconds" > "$work/bench.log" 2>&1 &
bench_pid=$!
# The run's event store: the first `<prefix>_orders` database that was not there before.
orders=""
while [ -z "$orders" ] && kill -0 "$bench_pid" 2>/dev/null; do
  for db in $(psql_at postgres "SELECT datname FROM pg_database WHERE datname LIKE '%\_orders'"); do
    if [[ " $known " != *" $db "* ]]; then orders=$db; break; fi
  done
  sleep 0.1
done
reads=${orders%_orders}_reads
samples=()
started=$(date +%s.%N)
while kill -0 "$bench_pid" 2>/dev/null; do
  store=$(psql_at "$orders" "SELECT count(*) FILTER (WHERE sequence = 1 AND aggregate_type = 'order') || ',' || coalesce(max(global_position), 0) || ',' || coalesce((SELECT max(global_position) FROM relay_checkpoints), 0) FROM events")
  read=$(psql_at "$reads" "SELECT count(*) FROM orders")
  if [ -z "$store" ] || [ -z "$read" ]; then sleep 0.2; continue; fi
  IFS=, read -r placed written relayed <<< "$store"
  at=$(awk "BEGIN { printf \"%.3f\", $(date +%s.%N) - $started }")
  samples+=("{\"at_s\": $at, \"orders_stored\": $placed, \"events_stored\": $written, \"events_relayed\": $relayed, \"orders_projected\": $read}")
  sleep 0.2
done
wait "$bench_pid" || { cat "$work/bench.log" >&2; exit 1; }
summary=$(ls "$work"/visibility-*.json)
out="$here/results/visibility-stages-$(date -u +%Y-%m-%dT%H%M%S).json"
{
  echo "{"
  echo "  \"benchmark\": \"visibility-stages\","
  echo "  \"at\": \"$(date -u +%FT%TZ)\","
  echo "  \"rate\": $rate, \"seconds\": $seconds, \"cpus\": $(nproc),"
  echo "  \"visibility\": $(cat "$summary"),"
  echo "  \"samples\": ["
  (IFS=,; echo "    ${samples[*]}")
  echo "  ]"
  echo "}"
} > "$out"
grep "visibility at" "$work/bench.log" >&2 || true
echo "written to $out" >&2
