#!/usr/bin/env bash
# Time to load the dashboard's data (GET /api/v1/summary, what the page polls) with N jobs in a
# SQLite database (default 1,000,000: half succeeded, a tenth failed, the rest queued for later).
# Usage: scripts/dashboard-bench.sh [path/to/purgeq] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/purgeq}
n=${2:-1000000}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
db=$tmp/bench.db
seq "$n" | sed 's|^|https://cdn.example.com/bench/|' >"$tmp/urls.txt"
"$bin" --db "$db" enqueue --file "$tmp/urls.txt" --delay 1h --tag bench >/dev/null
# Finish some jobs through the triggers, spread over the last day, as a worker would have.
now=$(($(date +%s) * 1000))
sqlite3 "$db" "UPDATE jobs SET state = 'succeeded', finished_at = $now - (id % 86400) * 1000, updated_at = $now WHERE id % 2 = 0;
               UPDATE jobs SET state = 'failed', finished_at = $now - (id % 86400) * 1000, updated_at = $now, last_error = 'bench' WHERE id % 10 = 1;"
"$bin" emulate --listen 127.0.0.1:0 >"$tmp/emu.out" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do grep -qs listening "$tmp/emu.out" && break; sleep 0.1; done
QINIU_ACCESS_KEY=purgeq-demo-ak QINIU_SECRET_KEY=purgeq-demo-sk QINIU_ENDPOINT=$(sed -n 's/^listening on //p' "$tmp/emu.out") RUST_LOG=purgeq=info \
  "$bin" --db "$db" worker --http-listen 127.0.0.1:0 >/dev/null 2>"$tmp/worker.log" & pids+=($!)
for _ in $(seq 300); do grep -qs "dashboard on" "$tmp/worker.log" && break; sleep 0.1; done
addr=$(grep -o 'dashboard on http://[^/]*' "$tmp/worker.log" | head -1 | sed 's|dashboard on http://||')
curl -fsS "http://$addr/api/v1/summary" >/dev/null # warm
for path in /api/v1/summary "/api/v1/jobs?limit=50" "/api/v1/jobs?tag=bench&state=failed&limit=50" /; do
  times=$(for _ in $(seq 20); do curl -fsS -o /dev/null -w '%{time_total}\n' "http://$addr$path"; done | sort -n)
  echo "$path: median $(echo "$times" | sed -n 10p)s, max $(echo "$times" | tail -1)s over 20 loads ($n jobs)"
done
