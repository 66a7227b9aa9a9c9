#!/usr/bin/env bash
# Ack -> visible at 1000 orders/s and gRPC PlaceOrder at 16 connections, alternated on fresh
# platforms: `base` = 0f6a333's parent 016d12e (TLS to the loopback Postgres, sqlx's prefer),
# `base-plain` = the same binary with `sslmode=disable` in its URL, `new` = the binary with
# connect_options (no TLS on loopback by default) and no sslmode in its URL.
# Binaries in /work/bin-{base,new}.
set -euo pipefail
out=bench/results/loopback-plain/pairs
url=postgres://postgres@127.0.0.1:5432/postgres
for round in 1 2 3; do
  for side in base base-plain new; do
    bin=/work/bin-${side%-plain}
    side_url=$url
    [ "$side" = base-plain ] && side_url="$url?sslmode=disable"
    TILLSTREAM_TEST_POSTGRES_URL=$side_url TILLSTREAM_BIN_DIR=$bin $bin/tillstream-bench \
      --out "$out/$side" visibility --rate 1000 --duration 10
    TILLSTREAM_TEST_POSTGRES_URL=$side_url TILLSTREAM_BIN_DIR=$bin $bin/tillstream-bench \
      --out "$out/$side" load --scenario grpc-place-order --users 16 --ramp 3 --duration 15
  done
done
