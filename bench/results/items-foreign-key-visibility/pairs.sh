#!/bin/bash
# PlaceOrder flat out, same binaries: the read model's order_items foreign key kept, or dropped during the ramp.
cd /work/main
export TILLSTREAM_TEST_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
OUT=bench/results/items-foreign-key-visibility
mkdir -p $OUT/kept $OUT/dropped
for pair in 1 2 3; do
  for mode in kept dropped; do
    echo "=== pair $pair $mode $(date +%T)"
    target/release/tillstream-bench --out $OUT/$mode visibility --rate 1000 --duration 15 > /tmp/fkv-$pair-$mode.log 2>&1 &
    bench=$!
    if [ $mode = dropped ]; then
      for i in $(seq 1 100); do
        db=$(psql -h 127.0.0.1 -U postgres -Atc "select datname from pg_database where datname like 'ts%\_reads' order by oid desc limit 1")
        if [ -n "$db" ] && psql -h 127.0.0.1 -U postgres -d "$db" -Atc "select 1 from pg_constraint where conname='order_items_order_id_fkey'" 2>/dev/null | grep -q 1; then
          psql -h 127.0.0.1 -U postgres -d "$db" -c "alter table order_items drop constraint order_items_order_id_fkey" && echo "dropped in $db at $(date +%T.%N)"
          break
        fi
        sleep 0.1
      done
    fi
    wait $bench
    grep "p50\|p99\|ack" /tmp/fkv-$pair-$mode.log
  done
done
