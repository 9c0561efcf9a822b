#!/usr/bin/env bash
# Cost of metrics and tracing: one single-node kmsd per run (fresh data dir), 20,000 v6
# activations at concurrency 64 from `kmsctl bench`, /metrics scraped once a second as
# Prometheus would. Modes: off (--metrics false), metrics (default), traces (metrics +
# OTLP export of every activation to the local sink), traces10 (10 % sampled).
# Prints: mode, activations/s, p50 ms, p99 ms, failures, kmsd CPU ms per 1,000 activations.
# Usage: scripts/bench-observability.sh [rounds]   (needs release builds, see docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
target/release/examples/otlp_sink >/tmp/kms-otlp-sink.log 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null' EXIT
sleep 1
ep=$(grep -o 'http://[0-9.:]*' /tmp/kms-otlp-sink.log)
run() {
    local mode=$1 extra d pid scraper t0 t1
    case $mode in
    off) extra="--metrics false" ;;
    metrics) extra="--metrics true" ;;
    traces) extra="--metrics true --otlp-endpoint $ep" ;;
    traces10) extra="--metrics true --otlp-endpoint $ep --trace-sample-ratio 0.1" ;;
    esac
    d=$(mktemp -d)
    # shellcheck disable=SC2086
    target/release/kmsd --listen 127.0.0.1:31688 --admin-listen 127.0.0.1:39688 \
        --cluster-listen 127.0.0.1:39689 --data-dir "$d" --log-level warn $extra 2>/dev/null &
    pid=$!
    for _ in $(seq 50); do curl -sf 127.0.0.1:39688/readyz >/dev/null && break; sleep 0.1; done
    (for _ in $(seq 30); do curl -s 127.0.0.1:39688/metrics >/dev/null || true; sleep 1; done) &
    scraper=$!
    t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    target/release/kmsctl bench --host 127.0.0.1 --port 31688 --count 20000 --concurrency 64 --json |
        python3 -c "import json,sys; r=json.load(sys.stdin); print('$mode', round(r['activations_per_s']), r['latency_ms'].get('p50'), r['latency_ms'].get('p99'), r['failed'], end=' ')"
    t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    echo "cpu_ms_per_1k=$(((t1 - t0) * 10 * 1000 / 20000))"
    kill $scraper 2>/dev/null || true
    kill $pid
    wait $pid 2>/dev/null || true
    rm -rf "$d"
}
for _ in $(seq "$rounds"); do
    for m in off metrics traces traces10; do run $m; done
done
