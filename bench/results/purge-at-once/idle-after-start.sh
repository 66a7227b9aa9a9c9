#!/usr/bin/env bash
# Idle RSS of `tillstream up` 12 s after it is ready (docs/performance.md, Fix 21):
#   bench/results/purge-at-once/idle-after-start.sh <label> [VAR=value ...]
# BIN=<binary> picks the binary (default: target/release/tillstream). Each run has a
# database prefix and NATS namespace of its own, both removed afterwards. Ports 18080–18096.
set -euo pipefail
label=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
bin=${BIN:-$here/../../../target/release/tillstream}
id=tsmem$(date +%s%N | tail -c 7)
dir=$(mktemp -d)
env "$@" TILLSTREAM_ADMIN_PASSWORD=admin-password-123 "$bin" up --no-demo \
  --postgres-url=postgresql://postgres@127.0.0.1:5432/postgres --database-prefix="$id" \
  --nats-url=nats://127.0.0.1:4222 --namespace="$id" --data-dir="$dir" \
  --gateway-http-addr=127.0.0.1:18080 --user-grpc-addr=127.0.0.1:18081 \
  --order-grpc-addr=127.0.0.1:18082 --ops-base-port=18090 --rate-limit-per-second=0 \
  --admin-email=admin@bench.local > "$dir/log" 2>&1 &
pid=$!
ready=no
for _ in $(seq 1 120); do
  if curl -sf 127.0.0.1:18080/readyz > /dev/null; then ready=yes; break; fi
  sleep 0.5
done
if [ "$ready" = yes ]; then
  sleep 12
  echo "$label $(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status") MiB"
else
  echo "$label: not ready within 60 s (log: $dir/log)" >&2
fi
kill "$pid" 2> /dev/null || true
wait "$pid" 2> /dev/null || true
for db in users orders reads; do
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${id}_$db WITH (FORCE)"
done
# The namespace's streams, through the JetStream API (one connection per request).
python3 - "$id" <<'EOF'
import json, socket, sys
def request(subject):
    s = socket.create_connection(("127.0.0.1", 4222)); s.recv(4096)
    s.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.r 1\r\nPUB %s _INBOX.r 0\r\n\r\n' % subject.encode())
    buf = b""
    while True:
        buf += s.recv(65536)
        i = buf.find(b"MSG ")
        e = buf.find(b"\r\n", i) if i >= 0 else -1
        if e >= 0:
            size = int(buf[i:e].split()[-1])
            if len(buf) >= e + 2 + size:
                s.close()
                return json.loads(buf[e + 2:e + 2 + size])
for name in request("$JS.API.STREAM.NAMES").get("streams") or []:
    if name.lower().startswith(sys.argv[1].lower() + "_"):
        request("$JS.API.STREAM.DELETE." + name)
EOF
[ "$ready" = yes ] && rm -rf "$dir"
