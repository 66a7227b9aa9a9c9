#!/usr/bin/env bash
# The admin's status-only order list with and without `orders_by_status`, and what the
# index costs the writes (docs/performance.md, Fix 26). Scratch database, dropped after.
# Usage: measure.sh [postgres url without database] > result.txt
set -euo pipefail
base=${1:-postgres://postgres@127.0.0.1:5432}
db=orders_by_status_$$
psql -q "$base/postgres" -c "CREATE DATABASE $db"
trap 'psql -q "$base/postgres" -c "DROP DATABASE $db"' EXIT
q() { psql -qAt "$base/$db" -c "$1"; }
q "CREATE TABLE orders (id uuid PRIMARY KEY, user_id uuid NOT NULL, status text NOT NULL,
     total_cents bigint NOT NULL, currency text NOT NULL, created_at timestamptz NOT NULL,
     updated_at timestamptz NOT NULL, version bigint NOT NULL);
   CREATE INDEX orders_by_user ON orders (user_id, id DESC);"
# 200 000 orders, ids in creation order; statuses as a shop would hold them: most
# delivered, recent ones placed or paid, few cancelled.
seed="INSERT INTO orders SELECT
     ('00000000-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
     ('00000000-0000-7000-8000-' || lpad(to_hex(n % 5000), 12, '0'))::uuid,
     CASE WHEN n % 1000 = 0 THEN 'CANCELLED' WHEN n > 199000 THEN 'PLACED'
          WHEN n > 198000 THEN 'PAID' WHEN n > 196000 THEN 'SHIPPED' ELSE 'DELIVERED' END,
     300, 'EUR', now(), now(), 1 FROM generate_series(1, 200000) n"
page() {
  for status in PLACED DELIVERED CANCELLED; do
    for _ in 1 2 3 4 5; do
      q "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM orders WHERE status = '$status' ORDER BY id DESC LIMIT 20" \
        | python3 -c "import json,sys; p=json.load(sys.stdin)[0]; print('$1', '$status', p['Execution Time'], p['Plan']['Plans'][0].get('Index Name'))"
    done
  done
}
writes() {
  q "TRUNCATE orders"
  local t0=$(date +%s%N); q "$seed"; local t1=$(date +%s%N)
  q "UPDATE orders SET status = 'SHIPPED', version = 2 WHERE status = 'PAID'"
  local t2=$(date +%s%N)
  q "UPDATE orders SET status = CASE status WHEN 'DELIVERED' THEN 'DELIVERED' ELSE status END, updated_at = now() WHERE id IN (SELECT id FROM orders ORDER BY id DESC LIMIT 50000)"
  local t3=$(date +%s%N)
  q "UPDATE orders SET status = 'CANCELLED', version = version + 1 WHERE id IN (SELECT id FROM orders ORDER BY id DESC LIMIT 50000)"
  local t4=$(date +%s%N)
  echo "$1 insert-200k-ms $(( (t1-t0)/1000000 )) update-same-status-50k-ms $(( (t3-t2)/1000000 )) update-new-status-50k-ms $(( (t4-t3)/1000000 ))"
}
for round in 1 2 3; do
  q "DROP INDEX IF EXISTS orders_by_status"; writes without
  q "CREATE INDEX orders_by_status ON orders (status, id DESC)"; writes with
done
q "DROP INDEX IF EXISTS orders_by_status"; q "TRUNCATE orders"; q "$seed"; q "ANALYZE orders"; page without
q "CREATE INDEX orders_by_status ON orders (status, id DESC)"; q "ANALYZE orders"; page with
