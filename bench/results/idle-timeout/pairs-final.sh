#!/usr/bin/env bash
# As pairs.sh, with the final serve loop (each connection timed until its first request
# reaches the router) against the binary before the change. Binaries in /work/exp/{pre,final}.
set -euo pipefail
out=bench/results/idle-timeout/pairs-final
for round in 1 2 3; do
  for side in pre final; do
    TILLSTREAM_BIN_DIR=/work/exp/$side /work/exp/$side/tillstream-bench --out "$out/$side" \
      load --scenario graphql-order --users 100 --ramp 3 --duration 15
  done
done
