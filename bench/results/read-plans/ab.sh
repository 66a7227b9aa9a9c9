#!/bin/bash
# Session-start binary (base) against this session's (new), alternately, same machine, same hour.
# /tmp/tillstream-base: target/release/tillstream built at ac7a978 (session start); /tmp/tillstream-new: built from the working tree committed as 56ecf77 minutes later (Fixes 19 and 20). Each pair runs base first.
cd /work/main
OUT=bench/results/read-plans
for pair in 1 2 3; do
  for bin in base new; do
    cp /tmp/tillstream-$bin target/release/tillstream
    mkdir -p $OUT/$bin
    echo "=== pair $pair $bin $(date +%T)"
    target/release/tillstream-bench --out $OUT/$bin visibility --rate 1000 --duration 15 > /tmp/ab-vis-$pair-$bin.log 2>&1
    grep "ack→visible" /tmp/ab-vis-$pair-$bin.log
    target/release/tillstream-bench --out $OUT/$bin load --scenario graphql-orders-page --users 100 --ramp 3 --duration 12 > /tmp/ab-page-$pair-$bin.log 2>&1
    grep "req/s, p50" /tmp/ab-page-$pair-$bin.log
  done
done
cp /tmp/tillstream-new target/release/tillstream
