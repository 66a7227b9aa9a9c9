#!/bin/bash
# Alternating suite rounds: Postgres over TLS (sqlx/libpq default sslmode=prefer) and without (sslmode=disable), both sides.
cd /work/main
OUT=bench/results/loopback-tls
mkdir -p $OUT/prefer $OUT/disable
for pair in 1 2; do
  for mode in prefer disable; do
    if [ $mode = disable ]; then export TILLSTREAM_TEST_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'; else unset TILLSTREAM_TEST_POSTGRES_URL; fi
    echo "=== pair $pair $mode $(date +%T)"
    target/release/tillstream-bench --out $OUT/$mode suite --runs 1 > /tmp/suite-$pair-$mode.log 2>&1
    echo "rc=$? $(date +%T)"
  done
done
