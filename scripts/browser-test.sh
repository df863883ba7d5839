#!/usr/bin/env bash
# The dashboard in a real browser: loads the demo data, starts the emulator and the worker with
# its listener, opens / in headless Chromium and checks from the DOM that the gauges, charts and
# tables show what `purgeq status --json` says, with no console error or CSP violation. Writes a
# screenshot to docs/dashboard.png when SCREENSHOT=1.
# Usage: scripts/browser-test.sh [path/to/purgeq]   (CI=true installs Debian's chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/purgeq}
[ -x "$bin" ] || cargo build --locked
if ! command -v chromium >/dev/null; then
  if [ "${CI:-}" = true ]; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "browser test SKIPPED: no chromium (apt-get install chromium)"; exit 0
  fi
fi
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
db=$tmp/demo.db
"$bin" demo --keep-db "$db" >"$tmp/demo.log" 2>&1
# A job whose tag is markup: the page must show it as text.
echo "https://cdn.example.com/xss.png" | "$bin" --db "$db" enqueue --tag '<img src=x onerror=alert(1)>' - >/dev/null

unset QINIU_ACCESS_KEY QINIU_SECRET_KEY QINIU_SECRET_KEY_FILE PAN123_CLIENT_ID PAN123_CLIENT_SECRET PAN123_CLIENT_SECRET_FILE PURGEQ_HTTP_TOKEN_FILE
"$bin" emulate --listen 127.0.0.1:0 >"$tmp/emu.out" 2>"$tmp/emu.err" & pids+=($!)
wait_for() { for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out waiting for $2 in $1"; cat "$1"; exit 1; }
wait_for "$tmp/emu.out" "listening on"
emu=$(sed -n 's/^listening on //p' "$tmp/emu.out")
QINIU_ACCESS_KEY=purgeq-demo-ak QINIU_SECRET_KEY=purgeq-demo-sk QINIU_ENDPOINT=$emu RUST_LOG=purgeq=info \
  "$bin" --db "$db" worker --http-listen 127.0.0.1:0 --max-targets-per-sec 0 --max-requests-per-sec 0 \
  >/dev/null 2>"$tmp/worker.log" & pids+=($!)
wait_for "$tmp/worker.log" "dashboard on http://"
addr=$(grep -o 'dashboard on http://[^/]*' "$tmp/worker.log" | head -1 | sed 's|dashboard on http://||')
# Let the worker settle the job just enqueued, so the page and status read the same queue.
for _ in $(seq 300); do
  "$bin" --db "$db" status --json | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(any(c["state"] in ("running",) for c in s["counts"]))' && break
  sleep 0.1
done
"$bin" --db "$db" status --json --limit 100000 >"$tmp/status.json"

flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --user-data-dir="$tmp/profile" --virtual-time-budget=8000)
chromium "${flags[@]}" --enable-logging=stderr --v=0 --dump-dom "http://$addr/" >"$tmp/dom.html" 2>"$tmp/chromium.log"
if [ "${SCREENSHOT:-}" = 1 ]; then
  chromium "${flags[@]}" --hide-scrollbars --window-size=1280,1500 --screenshot="$PWD/docs/dashboard.png" "http://$addr/" >/dev/null 2>&1
fi
if grep -E 'CONSOLE.*(Uncaught|rror|Refused)|Content Security Policy' "$tmp/chromium.log"; then
  echo "FAIL: console errors"; exit 1
fi
python3 scripts/browser-check.py "$tmp/dom.html" "$tmp/status.json"
