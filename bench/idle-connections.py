#!/usr/bin/env python3
"""Idle keep-alive connections and the gateway's memory (docs/performance.md, Fix 22).

Starts `tillstream-bench serve` (a fresh `tillstream up` with its own databases), opens
CONNECTIONS connections to the gateway, sends one GraphQL request on each and reads the
answer, then leaves them idle. Every second it records the gateway's open client
connections (ESTABLISHED in /proc/net/tcp on its port) and the platform's RSS, until the
gateway has closed them all (and 5 s more) or WATCH seconds have passed. Writes the
timeline as JSON.

    bench/idle-connections.py [--connections 1000] [--watch 30] [--out FILE] [-- UP_FLAGS]

The binaries come from TILLSTREAM_BIN_DIR or target/release, as for the bench. Flags after
`--` go to `tillstream up` (`-- --idle-timeout-secs 10`; the default is 75 s).
"""

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

REQUEST_BODY = b'{"query":"{ __typename }"}'


def established(port: int) -> int:
    """Connections in state ESTABLISHED whose local port is `port` (server side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def platform_pid(bench_pid: int) -> int:
    children = pathlib.Path(f"/proc/{bench_pid}/task/{bench_pid}/children").read_text().split()
    for child in children:
        if pathlib.Path(f"/proc/{child}/comm").read_text().strip() == "tillstream":
            return int(child)
    raise RuntimeError(f"no tillstream process under {bench_pid}: {children}")


async def one_request(host: str, port: int):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /graphql HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
        + b"content-length: %d\r\n\r\n" % len(REQUEST_BODY)
        + REQUEST_BODY
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status, reader, writer


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--watch", type=int, default=30, help="seconds to watch at most")
    parser.add_argument("--out")
    parser.add_argument("up", nargs="*", help="flags for `tillstream up`, after --")
    args = parser.parse_args()

    bin_dir = os.environ.get("TILLSTREAM_BIN_DIR", "target/release")
    bench = subprocess.Popen(
        [f"{bin_dir}/tillstream-bench", "serve", "--", *args.up], stdout=subprocess.PIPE, text=True
    )
    try:
        line = bench.stdout.readline()
        if not line.startswith("gateway"):
            raise RuntimeError(f"unexpected first line from the bench: {line!r}")
        host, port = line.split("http://", 1)[1].strip().rsplit(":", 1)
        port = int(port)
        pid = platform_pid(bench.pid)
        before = rss_mib(pid)

        answers = await asyncio.gather(
            *(one_request(host, port) for _ in range(args.connections))
        )
        statuses = sorted({status for status, _, _ in answers})
        started = time.monotonic()
        timeline = []
        all_closed = None
        while True:
            elapsed = time.monotonic() - started
            open_now = established(port)
            timeline.append(
                {"seconds": round(elapsed, 1), "open": open_now, "rss_mib": round(rss_mib(pid), 1)}
            )
            print(f"{elapsed:5.1f} s  open {open_now:5d}  rss {timeline[-1]['rss_mib']} MiB")
            if open_now == 0 and all_closed is None:
                all_closed = elapsed
            # Five seconds more once all are closed, for the memory to settle.
            if (all_closed is not None and elapsed > all_closed + 5) or elapsed > args.watch:
                break
            await asyncio.sleep(1)
        for _, _, writer in answers:
            writer.close()
        result = {
            "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "binaries": os.path.abspath(bin_dir),
            "up_flags": args.up,
            "connections": args.connections,
            "statuses": statuses,
            "rss_before_mib": round(before, 1),
            "all_closed_after_secs": None if all_closed is None else round(all_closed, 1),
            "timeline": timeline,
        }
        out = args.out or datetime.datetime.now().strftime(
            "bench/results/idle-connections-%Y-%m-%dT%H%M%S.json"
        )
        pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {out}")
        return 0
    finally:
        bench.send_signal(signal.SIGTERM)
        bench.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
