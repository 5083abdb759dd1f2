#!/usr/bin/env bash
# Load test on loopback: `cds-service serve` with 1 and then 2 workers, driven by wrk for a
# bounded time, on a realistic request. Needs wrk (Debian package `wrk`).
#   bash bench/load.sh [seconds=20] [connections=16]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
connections=${2:-16}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -c "
import json, sys
sys.path.insert(0, 'bench')
from bench import realistic_request
json.dump(realistic_request(), open('$work/request.json', 'w'))
"
for workers in ${WORKERS:-1 2}; do
  port=$((18000 + workers))
  CDS_AUTH_DISABLED=true CDS_TODAY=2026-11-01 CDS_LOG_LEVEL=warning \
    CDS_DATABASE_URL="sqlite:///$work/load-$workers.db" \
    .venv/bin/cds-service serve --host 127.0.0.1 --port "$port" --workers "$workers" \
    >"$work/server-$workers.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
    sleep 0.2
  done
  echo "== $workers worker(s), $connections connections, ${seconds}s, realistic request =="
  REQUEST_FILE="$work/request.json" wrk -t2 -c"$connections" -d"${seconds}s" --latency \
    -s bench/post.lua "http://127.0.0.1:$port/cds-services/patient-view"
  kill "$server"
  wait "$server" 2>/dev/null || true
done
