#!/usr/bin/env bash
# Appends "<seconds since start> <RSS MiB> <pid>" of the running `tillstream up` to $1 once
# a second, until killed (docs/performance.md, Fix 21).
set -u
out=$1
start=$(date +%s)
while true; do
  pid=$(pgrep -f '^[^ ]*/tillstream up ' | head -1 || true)
  if [ -n "$pid" ]; then
    rss=$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup" 2> /dev/null || true)
    [ -n "$rss" ] && echo "$(( $(date +%s) - start )) $((rss / 1024)) $pid" >> "$out"
  fi
  sleep 1
done
