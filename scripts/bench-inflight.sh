#!/usr/bin/env bash
# One group-commit tuning point (docs/benchmarks.md, "Group commit tuning"): a fresh single
# node with the given kmsd flags pinned to core $SCPU (default 0), a 2,000 warm-up, then
# `kmsctl bench -c 64 --count 20000` and `-c 1 --count 3000` pinned to core $LCPU (default 1).
#   scripts/bench-inflight.sh LABEL [kmsd flags...]     e.g. scripts/bench-inflight.sh inflight=2 --max-inflight 2
set -uo pipefail
cd "$(dirname "$0")/.."
label=$1; shift
rm -rf /tmp/tune; mkdir -p /tmp/tune
taskset -c ${SCPU:-0} target/release/kmsd --listen 127.0.0.1:1688 --admin-listen 127.0.0.1:9688 --cluster-listen 127.0.0.1:9689 --data-dir /tmp/tune/d --log-level warn "$@" >/dev/null 2>/tmp/tune/log &
P=$!
until curl -fs 127.0.0.1:9688/readyz >/dev/null 2>&1; do sleep 0.05; done
taskset -c ${LCPU:-1} target/release/kmsctl bench --count 2000 --concurrency 16 >/dev/null
c0=$(awk '{print $14+$15}' /proc/$P/stat)
out=$(taskset -c ${LCPU:-1} target/release/kmsctl bench --count 20000 --concurrency 64 --json)
c1=$(awk '{print $14+$15}' /proc/$P/stat)
out1=$(taskset -c ${LCPU:-1} target/release/kmsctl bench --count 3000 --concurrency 1 --json)
echo "$label: c=64 $(jq -r '.activations_per_s|round' <<<"$out")/s p50 $(jq -r '.latency_ms.p50' <<<"$out") cpu $(( (c1-c0)*10 )) ms/20k; c=1 p50 $(jq -r '.latency_ms.p50' <<<"$out1") ms $(jq -r '.activations_per_s|round' <<<"$out1")/s"
kill -TERM $P; wait $P 2>/dev/null
