#!/usr/bin/env bash
# Runs the benchmark of issue 5: builds the exporter and the load generator in release
# mode, then runs every scenario on Postgres and on SQLite, printing each one's figures
# and their ratio to the ceilings measured in the same run (see BENCHMARKS.md).
#
#   scripts/bench.sh                 scenarios 1-5 on Postgres, then 1-4 on SQLite
#   scripts/bench.sh soak            scenario 4, then the 10-minute soak at half its rate
#   scripts/bench.sh smoke           a few hundred events per scenario; checks counts only
#   scripts/bench.sh -- ARGS…        loadgen with your own arguments (see --help)
#
# Environment: BENCH_DURATION (seconds per scenario, default 10), BENCH_CONCURRENCY
# (default 32), PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable:
# loopback without TLS, as every figure in BENCHMARKS.md; drop the parameter to measure TLS),
# BENCH_OUT (default target/bench: logs and results-*.md).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  log "PostgreSQL is down; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

log "building the exporter and loadgen (release)"
cargo build --release --locked -p messaging-exporter --bin messaging-exporter -p loadgen --bin loadgen

duration=${BENCH_DURATION:-10}
concurrency=${BENCH_CONCURRENCY:-32}
common=(--exporter-bin target/release/messaging-exporter
        --pg-admin-url "${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
        --out "${BENCH_OUT:-target/bench}"
        --duration "$duration" --concurrency "$concurrency")
lg=target/release/loadgen

mode=${1:-all}
case "$mode" in
  all)
    log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$lg" "${common[@]}" --db postgres --scenarios 1,2,3,4,5
    "$lg" "${common[@]}" --db sqlite --scenarios 1,2,3,4
    ;;
  soak)
    "$lg" "${common[@]}" --db postgres --scenarios 4,6 --soak-seconds "${BENCH_SOAK_SECONDS:-600}"
    ;;
  smoke)
    "$lg" "${common[@]}" --db both --scenarios 1,2,3,4,5 --smoke 200 --concurrency 8
    ;;
  --)
    shift
    "$lg" --exporter-bin target/release/messaging-exporter "$@"
    ;;
  *)
    echo "usage: scripts/bench.sh [all|soak|smoke|-- loadgen args…]" >&2
    exit 2
    ;;
esac
