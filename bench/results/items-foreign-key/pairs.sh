#!/bin/bash
# Same binaries, the read model's order_items foreign key kept or dropped by hand on the fresh
# platform's read database during its start, alternately:
#   pairs.sh place-order   PlaceOrder flat out, 16 clients  → items-foreign-key/{kept,dropped}
#   pairs.sh visibility    ack → visible at 1000/s           → items-foreign-key-visibility/{kept,dropped}
cd /work/main
export TILLSTREAM_TEST_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
case "$1" in
  place-order) OUT=bench/results/items-foreign-key; RUN="load --scenario grpc-place-order --users 16 --ramp 4 --duration 15" ;;
  visibility) OUT=bench/results/items-foreign-key-visibility; RUN="visibility --rate 1000 --duration 15" ;;
  *) echo "usage: $0 place-order|visibility" >&2; exit 2 ;;
esac
mkdir -p $OUT/kept $OUT/dropped
for pair in 1 2 3; do
  for mode in kept dropped; do
    echo "=== pair $pair $mode $(date +%T)"
    target/release/tillstream-bench --out $OUT/$mode $RUN > /tmp/fk-$1-$pair-$mode.log 2>&1 &
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
    grep "req/s, p50\|ack→visible" /tmp/fk-$1-$pair-$mode.log
  done
done
