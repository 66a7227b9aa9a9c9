#!/usr/bin/env bash
# What `orders_by_status` costs the projector's writes, as pgbench sees it: each
# transaction places an order (an insert, status PLACED) and moves the order placed 100
# before it on (an update of status and version), durable, 8 clients for 15 s; rounds
# alternate without and with the index on a fresh table (docs/performance.md, Fix 26).
# With SYNC=off the sessions commit with synchronous_commit off, so the figures are the
# CPU the statements cost and not the WAL flush they wait for.
# Usage: [SYNC=off] writes.sh [rounds] [postgres url without database] > writes.txt
set -euo pipefail
rounds=${1:-3}
base=${2:-postgres://postgres@127.0.0.1:5432}
db=orders_by_status_writes_$$
export PGSSLMODE=disable
if [ "${SYNC:-on}" = off ]; then export PGOPTIONS="-c synchronous_commit=off"; fi
psql -q "$base/postgres" -c "CREATE DATABASE $db"
trap 'psql -q "$base/postgres" -c "DROP DATABASE $db"' EXIT
script=$(mktemp); trap 'rm -f "$script"; psql -q "$base/postgres" -c "DROP DATABASE $db"' EXIT
cat > "$script" <<'SQL'
SELECT nextval('placed') AS n \gset
BEGIN;
INSERT INTO orders VALUES (('00000000-0000-7000-8000-' || lpad(to_hex((:n)::bigint), 12, '0'))::uuid,
  gen_random_uuid(), 'PLACED', 300, 'EUR', now(), now(), 1);
UPDATE orders SET status = 'PAID', version = 2, updated_at = now()
  WHERE id = ('00000000-0000-7000-8000-' || lpad(to_hex((:n)::bigint - 100), 12, '0'))::uuid;
COMMIT;
SQL
for round in $(seq "$rounds"); do
  for variant in without with; do
    psql -qAt "$base/$db" -c "DROP TABLE IF EXISTS orders; DROP SEQUENCE IF EXISTS placed;
      CREATE SEQUENCE placed;
      CREATE TABLE orders (id uuid PRIMARY KEY, user_id uuid NOT NULL, status text NOT NULL,
        total_cents bigint NOT NULL, currency text NOT NULL, created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL, version bigint NOT NULL);
      CREATE INDEX orders_by_user ON orders (user_id, id DESC); CHECKPOINT"
    if [ "$variant" = with ]; then
      psql -qAt "$base/$db" -c "CREATE INDEX orders_by_status ON orders (status, id DESC)"
    fi
    report=$(pgbench -n -M prepared -c 8 -j 2 -T 15 -f "$script" "$base/$db" 2>&1) \
      || { echo "$report" >&2; exit 1; }
    tps=$(echo "$report" | awk '/^tps/ {print $3}')
    echo "round $round $variant synchronous_commit ${SYNC:-on} tps $tps"
  done
done
