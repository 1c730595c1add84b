#!/usr/bin/env bash
# Peak resident memory of a running service while a Flate bomb is uploaded (BENCHMARKS.md, "Hostile input").
# Usage: scripts/bomb_rss.sh [BINARY] [EXPANDED_GIB]   (default target/release/tenantry, 2 GiB)
set -euo pipefail
binary=${1:-target/release/tenantry}
gib=${2:-2}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work/bomb.pdf" "$gib" <<'PY'
import sys, zlib
path, gib = sys.argv[1], int(sys.argv[2])
c = zlib.compressobj(9)
data = c.compress(b"BT /F1 12 Tf 72 700 Td (Boom) Tj ET")
for _ in range(gib * 16):
    data += c.compress(b" " * (64 << 20))
data += c.flush()
head = b"%PDF-1.5\n1 0 obj\n<< /Length " + str(len(data)).encode() + b" /Filter /FlateDecode >>\nstream\n"
open(path, "wb").write(head + data + b"\nendstream\nendobj\ntrailer\n<< >>\n%%EOF\n")
PY
port=18$((RANDOM % 900 + 100))
"$binary" serve --data-dir "$work/data" --bind "127.0.0.1:$port" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.2; done
key=$(curl -s "localhost:$port/v1/signup" -H 'content-type: application/json' \
    -d '{"email":"bomb@bench.test","organization":"Bench","plan":"trial"}' |
    python3 -c 'import sys, json; print(json.load(sys.stdin)["api_key"])')
echo "file: $(stat -c %s "$work/bomb.pdf") bytes, expands to ${gib} GiB"
echo "before: $(grep VmHWM /proc/$pid/status)"
curl -s -o /dev/null -w 'answer: %{http_code} in %{time_total} s\n' "localhost:$port/v1/documents" \
    -H "authorization: Bearer $key" -F "file=@$work/bomb.pdf"
echo "after:  $(grep VmHWM /proc/$pid/status)"
