#!/usr/bin/env bash
# How much the gateway's per-request log line costs at most: order(id) at 100 connections
# with the `info` filter (one access line per request) and with `warn` (none), alternated,
# each run on a fresh platform, same binary. Binaries in /work/bin-base.
set -euo pipefail
out=bench/results/access-log/upper-bound
for round in 1 2 3; do
  for level in info warn; do
    RUST_LOG="$level,sqlx::postgres::notice=warn" TILLSTREAM_BIN_DIR=/work/bin-base \
      /work/bin-base/tillstream-bench --out "$out/$level" \
      load --scenario graphql-order --users 100 --ramp 3 --duration 15
  done
done
