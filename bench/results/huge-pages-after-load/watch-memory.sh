#!/bin/bash
# samples the all-in-one's memory once a second while a suite runs
out=$1; : > $out
while true; do
  pid=$(pgrep -f "release/tillstream up" | head -1)
  if [ -n "$pid" ]; then
    r=$(awk '/^Rss:|^Anonymous:|^AnonHugePages:/ {printf "%s %d ", $1, $2/1024}' /proc/$pid/smaps_rollup 2>/dev/null)
    t=$(grep THP_enabled /proc/$pid/status 2>/dev/null | awk '{print $2}')
    echo "$(date +%T) $pid $r thp=$t" >> $out
  fi
  [ -f /tmp/stop-watch ] && break
  sleep 1
done
