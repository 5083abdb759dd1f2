#!/usr/bin/env bash
# HTTP throughput of spine-cds against its floor (bench/floor.py: same uvicorn stack, same body
# parsed with orjson, a fixed answer), interleaved A/B rounds on loopback, for 1 and 2 workers
# (or the counts in WORKERS, e.g. WORKERS="1 2 4").
# Prints per-round figures, then medians and the spine-cds / floor ratios. Needs wrk.
# Beside each figure: the CPU the server's processes (all workers) spent per request, and the
# 1-minute load average after the round. On a 2-core machine wrk shares the cores with the
# workers, so 2 workers cannot show scaling there; CPU per request is the comparable figure.
#   bash bench/ab.sh [rounds=3] [seconds=10] [connections=16]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-10}
connections=${3:-16}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
.venv/bin/python -c "
import json, sys
sys.path.insert(0, 'bench')
from bench import realistic_request
json.dump(realistic_request(), open('$work/request.json', 'w'))
"
start() {  # app workers port
  if [ "$1" = spine ]; then
    CDS_AUTH_DISABLED=true CDS_TODAY=2026-11-01 CDS_LOG_LEVEL=warning \
      CDS_DATABASE_URL="sqlite:///$work/ab-$2.db" \
      .venv/bin/cds-service serve --host 127.0.0.1 --port "$3" --workers "$2" >"$work/$1-$2.log" 2>&1 &
  else
    .venv/bin/uvicorn bench.floor:app --host 127.0.0.1 --port "$3" --workers "$2" \
      --log-level warning --no-access-log >"$work/$1-$2.log" 2>&1 &
  fi
  echo $!
}
cpu_ticks() {  # pid -> CPU clock ticks of the process and its descendants
  local total=0 child
  total=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0)
  for child in $(pgrep -P "$1"); do total=$((total + $(cpu_ticks "$child"))); done
  echo "$total"
}
load() {  # port pid -> "requests/s p50_ms p99_ms non2xx cpu_ms_per_request load_average"
  local before after
  before=$(cpu_ticks "$2")
  REQUEST_FILE="$work/request.json" wrk -t2 -c"$connections" -d"${seconds}s" --latency \
    -s bench/post.lua "http://127.0.0.1:$1/cds-services/patient-view" >"$work/wrk.txt"
  after=$(cpu_ticks "$2")
  .venv/bin/python - "$work/wrk.txt" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
def ms(label):
    value, unit = re.search(label + r'\s+([\d.]+)(us|ms|s)', text).groups()
    return float(value) * {'us': 0.001, 'ms': 1, 's': 1000}[unit]
non2xx = re.search(r'Non-2xx or 3xx responses: (\d+)', text)
rps = float(re.search(r'Requests/sec:\s+([\d.]+)', text).group(1))
done = int(re.search(r'(\d+) requests in', text).group(1))
cpu = int(sys.argv[2]) * 1000 / int(sys.argv[3]) / max(done, 1)
print(f'{rps:.1f} {ms("50%"):.1f} {ms("99%"):.1f} {non2xx.group(1) if non2xx else 0} '
      f'{cpu:.2f} {os.getloadavg()[0]:.2f}')
PY
}
for workers in ${WORKERS:-1 2}; do
  for app in spine floor; do
    if [ "$app" = spine ]; then offset=1; else offset=2; fi
    port=$((19000 + workers * 10 + offset))
    pid=$(start "$app" "$workers" "$port")
    for _ in $(seq 150); do
      curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
        --data @"$work/request.json" "http://127.0.0.1:$port/cds-services/patient-view" && break
      sleep 0.2
    done
    echo "$pid" >"$work/pid-$app-$workers"
    echo "$port" >"$work/port-$app-$workers"
  done
  for round in $(seq "$rounds"); do
    for app in spine floor; do
      port=$(cat "$work/port-$app-$workers")
      echo "$workers $app $round $(load "$port" "$(cat "$work/pid-$app-$workers")")" |
        tee -a "$work/results"
    done
  done
  for app in spine floor; do kill "$(cat "$work/pid-$app-$workers")" 2>/dev/null || true; done
  sleep 1
done
.venv/bin/python - "$work/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print("\nworkers  app    req/s  p50 ms  p99 ms  non-2xx  CPU ms/req  load   (medians over rounds)")
medians = {}
for workers in sorted({r[0] for r in rows}, key=int):
    for app in ("spine", "floor"):
        got = [r for r in rows if r[0] == workers and r[1] == app]
        rps, p50, p99, cpu, load = (
            statistics.median(float(r[i]) for r in got) for i in (3, 4, 5, 7, 8)
        )
        medians[workers, app] = rps, p50, p99, cpu
        errors = sum(int(r[6]) for r in got)
        print(f"{workers:>7}  {app:5} {rps:7.1f} {p50:7.1f} {p99:7.1f} {errors:8d} {cpu:11.2f} {load:5.2f}")
    spine, floor = medians[workers, "spine"], medians[workers, "floor"]
    print(f"{workers:>7}  ratio  throughput {spine[0] / floor[0]:.2f}x of the floor, "
          f"p99/p50 {spine[2] / spine[1]:.1f}, CPU per request {spine[3] / floor[3]:.1f}x the floor's")
PY
