#!/usr/bin/env bash
# order(id) at 100 connections: the binary before the change with its default filter
# (`base`), the same binary with the gateway's request line and span filtered out (`quiet`,
# what logging costs at most), and the binary after the change with its default filter
# (`new`). Alternated, each run on a fresh platform. Binaries in /work/bin-{base,new}.
set -euo pipefail
out=bench/results/access-log/pairs
for round in 1 2 3; do
  for side in base quiet new; do
    bin=/work/bin-$side
    filter="info,sqlx::postgres::notice=warn"
    if [ "$side" = quiet ]; then
      bin=/work/bin-base
      filter="$filter,tillstream_gateway::request_trace=warn"
    fi
    RUST_LOG="$filter" TILLSTREAM_BIN_DIR=$bin $bin/tillstream-bench --out "$out/$side" \
      load --scenario graphql-order --users 100 --ramp 3 --duration 15
  done
done
