#!/usr/bin/env bash
# order(id) at 100 connections, the binaries before and after Fix 27 alternated on fresh
# platforms, the same bench binary for both (docs/performance.md, Fix 27).
# Usage: pairs.sh <base bin dir> <new bin dir> [rounds]
set -euo pipefail
base=$1; new=$2; rounds=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
for round in $(seq "$rounds"); do
  for variant in base new; do
    dir=$base; [ "$variant" = new ] && dir=$new
    out="$here/pairs/$variant-$round"; mkdir -p "$out"
    TILLSTREAM_BIN_DIR=$dir "$new/tillstream-bench" --out "$out" \
      load --scenario graphql-order --users 100 --ramp 3 --duration 15 2>&1 | grep "req/s, p50" | sed "s/^/$variant round $round: /"
  done
done
