#!/usr/bin/env bash
# order(id) at 100 connections and the mixed reads at 1000, with the binaries before
# (axum::serve) and after (runtime::http_server) the change, alternated in the same
# half hour; each run on a fresh platform. Binaries in /work/exp/{pre,new}.
set -euo pipefail
out=bench/results/idle-timeout/pairs
for round in 1 2 3; do
  for side in pre new; do
    TILLSTREAM_BIN_DIR=/work/exp/$side /work/exp/$side/tillstream-bench --out "$out/$side" \
      load --scenario graphql-order --users 100 --ramp 3 --duration 15
    TILLSTREAM_BIN_DIR=/work/exp/$side /work/exp/$side/tillstream-bench --out "$out/$side" \
      load --scenario mixed --users 1000 --ramp 5 --duration 15 --think-ms 1000
  done
done
