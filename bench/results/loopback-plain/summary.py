#!/usr/bin/env python3
"""Each run under the given directories, in time order: ack -> visible, or PlaceOrder."""
import json, pathlib, sys

for side in sys.argv[1:]:
    for path in sorted(pathlib.Path(side).glob("*.json"), key=lambda p: p.name.split("-", 1)[1]):
        d = json.loads(path.read_text())
        r, tls = d["result"], d["machine"].get("postgres_tls")
        if "ack_to_visible_ms" in r:
            v, a = r["ack_to_visible_ms"], r["place_order_ack_ms"]
            print(f"{side:45} {path.name:36} visible p50 {v['p50']:6.1f} p99 {v['p99']:6.1f} max {v['max']:6.1f}"
                  f" | ack p50 {a['p50']:5.1f} p99 {a['p99']:5.1f} | placed {r['placed_orders_per_second']:.0f}/s errors {r['errors_total']}")
        else:
            l = r["latency_ms"]
            print(f"{side:45} {path.name:36} PlaceOrder {r['throughput_per_second']:6.0f}/s p50 {l['p50']:5.2f} p99 {l['p99']:6.2f} errors {r['errors_total']}")
