#!/usr/bin/env python3
"""Throughput and latency of each load run under the given directories, in time order."""
import json, pathlib, sys

for side in sys.argv[1:]:
    for path in sorted(pathlib.Path(side).glob("load-*.json")):
        r = json.loads(path.read_text())["result"]
        l = r["latency_ms"]
        print(f"{side:50} {path.name:32} {r['throughput_per_second']:8.0f} req/s  "
              f"p50 {l['p50']:6.2f}  p99 {l['p99']:6.2f}  max {l['max']:7.2f}  errors {r['errors_total']}")
