#!/usr/bin/env bash
# Every test: the whole suite on the embedded SQLite store, then again on PostgreSQL.
#
# The PostgreSQL half uses $PURGEQ_TEST_PG (an admin URL, e.g. postgres://postgres@127.0.0.1/postgres)
# when set. Otherwise it starts a throwaway server on loopback from the PostgreSQL binaries on this
# machine (installing Debian's postgresql package first when running as root with apt), and stops
# it afterwards. Without PostgreSQL it says so and skips that half; it never skips silently.
# Both runs cover the workspace (the product and the bench crate's unit tests). Extra arguments go
# to both `cargo test` runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# One test runs Debian's sqlite3 program beside a worker, as an operator would (db_faults.rs).
if ! command -v sqlite3 >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing sqlite3 (Debian package sqlite3)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 >/dev/null) ||
    echo "sqlite3 could not be installed: that test will say skipped"
fi

echo "== cargo test (SQLite)"
cargo test --workspace "$@"

run_pg() {
  echo "== cargo test (PostgreSQL at ${PURGEQ_TEST_PG%%@*}@...)"
  PURGEQ_TEST_BACKEND=postgres cargo test --workspace "$@"
}

if [ -n "${PURGEQ_TEST_PG:-}" ]; then
  run_pg "$@"
  exit 0
fi

find_pg() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
pgbin=$(find_pg)
if [ -z "$pgbin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing PostgreSQL (Debian package postgresql)"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null); then
    pgbin=$(find_pg)
  fi
fi
if [ -z "$pgbin" ]; then
  echo "PostgreSQL half SKIPPED: no PostgreSQL server binaries here (install Debian's postgresql package, or set PURGEQ_TEST_PG to an admin URL of a server)"
  exit 0
fi

tmp=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
as_pg=()
if [ "$(id -u)" = 0 ]; then
  # The server refuses to run as root.
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$tmp"
  as_pg=(setpriv --reuid=postgres --regid="$(id -g postgres)" --clear-groups --)
fi
stop() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap stop EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$tmp/data" -A trust -U postgres >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $tmp -c fsync=off -c max_connections=300" start >/dev/null
export PURGEQ_TEST_PG="postgres://postgres@127.0.0.1:$port/postgres"
run_pg "$@"
