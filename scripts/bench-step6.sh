#!/usr/bin/env bash
# The step-6 performance figures (docs/benchmarks.md, "Step 6: process-level figures"), on
# release builds over loopback: kmsd pinned to core 0, the load (kmsctl bench, tcp_baseline)
# to core 1 where the machine has two cores. Prints every command and its output.
#
#   cargo build --release -p kmsd -p kmsctl --bins --example tcp_baseline --example disk_baseline
#   scripts/bench-step6.sh [single|cluster|million|3m|ab|gaps|all]
#
# Every run uses fresh data directories under $BENCH_DIR (default: a new temp dir) and stops
# the processes it started. MILLION (default 1000000) sets the size of the big run; ROUNDS
# (default 3) how many interleaved baseline and kmsd runs the throughput medians come from.
# KMSD (default target/release/kmsd) is the kmsd binary to measure, e.g. one built from an
# earlier commit for a before/after comparison; everything else comes from target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
BIN=target/release
KMSD="${KMSD:-$BIN/kmsd}"
DIR="${BENCH_DIR:-$(mktemp -d /tmp/kms-bench.XXXXXX)}"
MILLION="${MILLION:-1000000}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

say() { printf '\n$ %s\n' "$*"; }
run() { say "$*"; "$@"; }
field() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
cpu_ms() { awk '{printf "%d", ($14+$15)*1000/'"$(getconf CLK_TCK)"'}' "/proc/$1/stat"; }
# ctx PID: context switches of all the process's threads (/proc/PID/status alone counts only
# the main thread's).
ctx() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ {n += $2} END {print n}'; }
wait_ready() {
    local url=$1 t0
    t0=$(date +%s%N)
    until curl -fs "$url/readyz" >/dev/null 2>&1; do
        if (( $(date +%s%N) - t0 > 120000000000 )); then echo "not ready after 120 s: $url" >&2; exit 1; fi
        sleep 0.01
    done
    echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
# start_node NAME IP EXTRA...: a kmsd on IP (ports 1688/9688/9689), data in $DIR/NAME; its
# pid in $PID.
start_node() {
    local name=$1 ip=$2
    shift 2
    taskset -c "$SERVER_CPU" "$KMSD" --listen "$ip:1688" --admin-listen "$ip:9688" \
        --cluster-listen "$ip:9689" --data-dir "$DIR/$name" --log-level warn ${KMSD_ARGS:-} "$@" \
        >/dev/null 2>>"$DIR/$name.log" &
    PID=$!
    pids+=("$PID")
}
# start_cluster PREFIX: three nodes on 127.0.0.1-3 (data in $DIR/PREFIX1..3), all ready; their
# pids in CPIDS, the leader's id in LEADER and the next node's in FOLLOWER.
start_cluster() {
    local peers="1=127.0.0.1:9689,2=127.0.0.2:9689,3=127.0.0.3:9689" i
    CPIDS=()
    for i in 1 2 3; do
        start_node "$1$i" "127.0.0.$i" --node-id "$i" --peers "$peers"; CPIDS+=("$PID")
    done
    for i in 1 2 3; do wait_ready "http://127.0.0.$i:9688" >/dev/null; done
    LEADER=$(curl -fs http://127.0.0.1:9688/status | jq -r '.raft.leader')
    FOLLOWER=$(( LEADER % 3 + 1 ))
}
bench() { taskset -c "$LOAD_CPU" "$BIN/kmsctl" bench --protocol 6 "$@"; }
# measured PID LABEL -- bench args: one bench run with the server's CPU and context switches.
measured() {
    local pid=$1 label=$2
    shift 3
    local c0 x0 out n c1 x1
    c0=$(cpu_ms "$pid"); x0=$(ctx "$pid")
    ALL0=0
    if [ -n "${ALL_PIDS:-}" ]; then
        local q
        for q in $ALL_PIDS; do ALL0=$((ALL0 + $(cpu_ms "$q"))); done
    fi
    say "kmsctl bench --protocol 6 $*"
    out=$(bench --json "$@")
    bench_text "$out"
    c1=$(cpu_ms "$pid"); x1=$(ctx "$pid")
    n=$(jq -r '.succeeded' <<<"$out")
    if [ -n "${ALL_PIDS:-}" ]; then
        local all=0 q
        for q in $ALL_PIDS; do all=$((all + $(cpu_ms "$q"))); done
        LAST_ALL=$(echo "($all-$ALL0)*1000/$n" | bc -l)
        printf 'all nodes: CPU %d ms for %d activations = %.1f ms per 1,000\n' $((all - ALL0)) "$n" "$LAST_ALL"
    fi
    printf '%s: kmsd CPU %d ms for %d activations = %.1f ms per 1,000; %d context switches (all threads) = %.2f per activation\n' \
        "$label" $((c1 - c0)) "$n" "$(echo "($c1-$c0)*1000/$n" | bc -l)" $((x1 - x0)) "$(echo "($x1-$x0)/$n" | bc -l)"
    LAST_RATE=$(jq -r '.activations_per_s' <<<"$out")
    LAST_P50=$(jq -r '.latency_ms.p50' <<<"$out")
}
# median X...: the middle value (this machine is a shared VM; one run can be off by 2x, so
# the throughput ratios are taken from the medians of ROUNDS interleaved runs).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ROUNDS="${ROUNDS:-3}"
bench_text() {
    jq -r '"requests \(.requests) (\(.succeeded) ok, \(.failed) failed) at concurrency \(.concurrency); \(.elapsed_s * 1000 | round / 1000) s; \(.activations_per_s | round)/s; latency ms p50 \(.latency_ms.p50 * 1000 | round / 1000) p90 \(.latency_ms.p90 * 1000 | round / 1000) p99 \(.latency_ms.p99 * 1000 | round / 1000) max \(.latency_ms.max * 1000 | round / 1000); longest gap \(.longest_gap_ms * 10 | round / 10) ms; errors \(.errors | tojson)"' <<<"$1"
}
baseline() {
    say "taskset -c $SERVER_CPU,$LOAD_CPU $BIN/examples/tcp_baseline 20000 64"
    local out
    out=$(taskset -c "$SERVER_CPU,$LOAD_CPU" "$BIN/examples/tcp_baseline" 20000 64)
    echo "$out"
    BASELINE=$(sed -E 's/.*= ([0-9.]+) exchanges.*/\1/' <<<"$out")
}
# floor: the c=1 floor of this moment: the TCP pattern alone at concurrency 1 (tcp_baseline)
# plus one durable append on the data dir's disk after an idle gap (disk_baseline); a host
# that makes each answer durable before sending it cannot answer faster. Sets FLOOR (ms).
floor() {
    local tcp disk t d
    say "taskset -c $SERVER_CPU,$LOAD_CPU $BIN/examples/tcp_baseline 3000 1"
    tcp=$(taskset -c "$SERVER_CPU,$LOAD_CPU" "$BIN/examples/tcp_baseline" 3000 1)
    echo "$tcp"
    say "taskset -c $SERVER_CPU $BIN/examples/disk_baseline $DIR 2000 300"
    disk=$(taskset -c "$SERVER_CPU" "$BIN/examples/disk_baseline" "$DIR" 2000 300)
    echo "$disk"
    t=$(sed -E 's/.*p50 ([0-9.]+) ms.*/\1/' <<<"$tcp")
    d=$(grep 'idle gap' <<<"$disk" | sed -E 's/.*p50 ([0-9.]+) ms.*/\1/')
    FLOOR=$(echo "$t + $d" | bc -l)
    printf 'c=1 floor (TCP exchange p50 %.3f ms + durable append p50 %.3f ms): %.3f ms\n' "$t" "$d" "$FLOOR"
}
mem() { echo "$1: VmRSS $(field "$2" VmRSS) kB, VmHWM $(field "$2" VmHWM) kB, data dir $(du -sh "$DIR/$3" | cut -f1)"; }

single() {
    echo "== single node =="
    local pid r bases=() rates=() p50s=() floors=()
    start_node single 127.0.0.1; pid=$PID
    wait_ready http://127.0.0.1:9688 >/dev/null
    bench --count 2000 --concurrency 16 >/dev/null # warm-up
    for r in $(seq "$ROUNDS"); do
        echo "-- round $r of $ROUNDS"
        baseline; bases+=("$BASELINE")
        measured "$pid" "c=64" -- --count 20000 --concurrency 64; rates+=("$LAST_RATE")
        printf 'c=64 vs tcp_baseline (this round): %.0f%%\n' "$(echo "$LAST_RATE*100/$BASELINE" | bc -l)"
        measured "$pid" "c=1" -- --count 3000 --concurrency 1; p50s+=("$LAST_P50")
        floor; floors+=("$FLOOR")
    done
    local b m
    b=$(median "${bases[@]}"); m=$(median "${rates[@]}")
    printf 'medians over %d rounds: tcp_baseline %.0f/s, c=64 %.0f/s = %.0f%% of it; c=1 p50 %.3f ms (floor %.3f ms)\n' \
        "$ROUNDS" "$b" "$m" "$(echo "$m*100/$b" | bc -l)" "$(median "${p50s[@]}")" "$(median "${floors[@]}")"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

cluster() {
    echo "== three nodes =="
    local p1 p2 p3 leader follower r bases=() lrates=() frates=()
    start_cluster n; p1=${CPIDS[0]}; p2=${CPIDS[1]}; p3=${CPIDS[2]}
    leader=$LEADER; follower=$FOLLOWER
    local lpid fpid
    lpid=${CPIDS[leader - 1]}; fpid=${CPIDS[follower - 1]}
    echo "leader: node $leader, follower measured: node $follower"
    ALL_PIDS="$p1 $p2 $p3"
    bench --host "127.0.0.$leader" --count 2000 --concurrency 16 >/dev/null
    for r in $(seq "$ROUNDS"); do
        echo "-- round $r of $ROUNDS"
        baseline; bases+=("$BASELINE")
        measured "$lpid" "through the leader (node $leader), c=64" -- --host "127.0.0.$leader" --count 20000 --concurrency 64
        lrates+=("$LAST_RATE")
        measured "$fpid" "through a follower (node $follower), c=64" -- --host "127.0.0.$follower" --count 20000 --concurrency 64
        frates+=("$LAST_RATE")
    done
    ALL_PIDS=""
    local b l f
    b=$(median "${bases[@]}"); l=$(median "${lrates[@]}"); f=$(median "${frates[@]}")
    printf 'medians over %d rounds: tcp_baseline %.0f/s, leader %.0f/s, follower %.0f/s; follower/leader: %.2f; leader vs tcp_baseline: %.0f%%\n' \
        "$ROUNDS" "$b" "$l" "$f" "$(echo "$f/$l" | bc -l)" "$(echo "$l*100/$b" | bc -l)"
    kill -TERM "$p1" "$p2" "$p3"; wait "$p1" "$p2" "$p3" 2>/dev/null || true
}

# ab: the same three-node run through the leader for two kmsd binaries, alternating, a fresh
# cluster each time: KMSD_A (required) and KMSD_B (default target/release/kmsd), ROUNDS pairs.
ab() {
    local a=${KMSD_A:?set KMSD_A to the kmsd binary to compare with} b=${KMSD_B:-$BIN/kmsd}
    local r which cpus_a=() cpus_b=() rates_a=() rates_b=()
    echo "== A: $a; B: $b; three nodes on core(s) $SERVER_CPU, through the leader"
    for r in $(seq "$ROUNDS"); do
        for which in A B; do
            if [ "$which" = A ]; then KMSD=$a; else KMSD=$b; fi
            echo "-- round $r of $ROUNDS, $which"
            start_cluster "ab$r$which"
            ALL_PIDS="${CPIDS[*]}"
            bench --host "127.0.0.$LEADER" --count 2000 --concurrency 16 >/dev/null
            local e0 e1
            e0=$(curl -fs "http://127.0.0.$LEADER:9688/status" | jq '.raft.last_log_index')
            measured "${CPIDS[LEADER - 1]}" "$which: leader (node $LEADER), c=64" -- --host "127.0.0.$LEADER" --count 30000 --concurrency 64
            e1=$(curl -fs "http://127.0.0.$LEADER:9688/status" | jq '.raft.last_log_index')
            printf '%s: %d log entries, %.1f activations per entry\n' "$which" $((e1 - e0)) "$(echo "30000/($e1-$e0)" | bc -l)"
            if [ "$which" = A ]; then cpus_a+=("$LAST_ALL"); rates_a+=("$LAST_RATE"); else cpus_b+=("$LAST_ALL"); rates_b+=("$LAST_RATE"); fi
            ALL_PIDS=""
            kill -TERM "${CPIDS[@]}"; wait "${CPIDS[@]}" 2>/dev/null || true
        done
    done
    printf 'medians over %d pairs: A %.0f/s at %.1f ms CPU per 1,000 (all nodes); B %.0f/s at %.1f ms\n' "$ROUNDS" \
        "$(median "${rates_a[@]}")" "$(median "${cpus_a[@]}")" "$(median "${rates_b[@]}")" "$(median "${cpus_b[@]}")"
}

million() {
    echo "== $MILLION distinct clients, single node =="
    local pid
    start_node big 127.0.0.1; pid=$PID
    wait_ready http://127.0.0.1:9688 >/dev/null
    measured "$pid" "first 100,000" -- --count 100000 --concurrency 64
    mem "after 100,000 clients" "$pid" big
    curl -fs http://127.0.0.1:9688/status | jq -c '{total_requests, snapshot_index: .raft.snapshot_index, last_log_index: .raft.last_log_index}'
    measured "$pid" "next $((MILLION - 100000))" -- --count $((MILLION - 100000)) --concurrency 64
    mem "after $MILLION clients" "$pid" big
    curl -fs http://127.0.0.1:9688/status | jq -c '{total_requests, active: [.groups[] | select(.active_clients > 0) | {name, active_clients}], snapshot_index: .raft.snapshot_index, last_log_index: .raft.last_log_index}'

    say "kill -TERM kmsd; start it again on the same data dir; time to /readyz 200"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    start_node big 127.0.0.1; pid=$PID
    echo "restart to ready: $(wait_ready http://127.0.0.1:9688) ms"
    mem "after restart" "$pid" big

    say "a new node 2 joins as a learner: kmsctl cluster add-learner (returns once caught up)"
    local p2 t0
    start_node joiner 127.0.0.2 --node-id 2 --peers "1=127.0.0.1:9689,2=127.0.0.2:9689"; p2=$PID
    sleep 1
    t0=$(date +%s%N)
    "$BIN/kmsctl" cluster add-learner --cluster 127.0.0.1:9689 --id 2 --addr 127.0.0.2:9689
    echo "new learner caught up (snapshot + log) in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    curl -fs http://127.0.0.2:9688/status | jq -c '{total_requests, applied: .raft.applied_index, snapshot_index: .raft.snapshot_index}'
    # add-learner returns once openraft has replicated the log to the learner; applying the
    # tail takes a moment more. Done means the learner counts every activation.
    until [ "$(curl -fs http://127.0.0.2:9688/status | jq -r '.total_requests')" = "$MILLION" ]; do
        if (( $(date +%s%N) - t0 > 120000000000 )); then echo "learner not complete after 120 s" >&2; exit 1; fi
        sleep 0.01
    done
    echo "new learner counts all $MILLION activations $(( ($(date +%s%N) - t0) / 1000000 )) ms after add-learner started"
    mem "learner" "$p2" joiner
    kill -TERM "$pid" "$p2"; wait "$pid" "$p2" 2>/dev/null || true
}

# totals URL...: prints total/failed/windows active clients of each node.
totals() {
    for url in "$@"; do
        echo "$url: $(curl -fs "$url/status" | jq -c '{total_requests, failed_requests, windows_active: ([.groups[] | select(.name == "windows") | .active_clients] | first), applied: .raft.applied_index}')"
    done
}

three_million() {
    echo "== 3,000,000 activations at full rate =="
    local pid
    start_node big3 127.0.0.1; pid=$PID
    wait_ready http://127.0.0.1:9688 >/dev/null
    measured "$pid" "single node, 3,000,000" -- --count 3000000 --concurrency 64
    totals http://127.0.0.1:9688
    mem "single node after 3,000,000" "$pid" big3
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

    local p1 p2 p3 leader follower
    start_cluster c; p1=${CPIDS[0]}; p2=${CPIDS[1]}; p3=${CPIDS[2]}
    leader=$LEADER; follower=$FOLLOWER
    say "3 nodes: kmsctl bench --count 2000000 --concurrency 48 through the leader (node $leader) and --count 1000000 --concurrency 16 through a follower (node $follower), at the same time"
    local t0=$SECONDS
    bench --host "127.0.0.$leader" --count 2000000 --concurrency 48 --json >"$DIR/leader.json" &
    local b1=$!
    bench --host "127.0.0.$follower" --count 1000000 --concurrency 16 --json >"$DIR/follower.json" &
    local b2=$!
    wait "$b1" "$b2"
    echo "both done in $((SECONDS - t0)) s"
    bench_text "$(cat "$DIR/leader.json")"
    bench_text "$(cat "$DIR/follower.json")"
    sleep 2
    totals http://127.0.0.1:9688 http://127.0.0.2:9688 http://127.0.0.3:9688
    mem "node 1" "$p1" c1; mem "node 2" "$p2" c2; mem "node 3" "$p3" c3
    kill -TERM "$p1" "$p2" "$p3"; wait "$p1" "$p2" "$p3" 2>/dev/null || true
}

# gaps: 3 nodes, MILLION activations (70% through the leader at c=48, 30% through a
# follower at c=16, at the same time), each activation logged; prints the longest gaps
# without an answered activation with their UTC times (to match against the nodes' logs in
# $DIR/c*.log) and the AppendEntries timeouts the leader logged.
gaps() {
    echo "== longest gaps, 3 nodes, $MILLION activations =="
    local p1 p2 p3 n1=$((MILLION * 7 / 10)) n2
    n2=$((MILLION - n1))
    start_cluster g; p1=${CPIDS[0]}; p2=${CPIDS[1]}; p3=${CPIDS[2]}
    say "kmsctl bench --count $n1 --concurrency 48 via the leader (node $LEADER) and --count $n2 --concurrency 16 via node $FOLLOWER, at the same time, --log each"
    bench --host "127.0.0.$LEADER" --count "$n1" --concurrency 48 --log "$DIR/lead.jsonl" --json >"$DIR/lead.json" &
    local b1=$!
    bench --host "127.0.0.$FOLLOWER" --count "$n2" --concurrency 16 --log "$DIR/fol.jsonl" --json >"$DIR/fol.json" &
    wait "$b1" $!
    bench_text "$(cat "$DIR/lead.json")"
    bench_text "$(cat "$DIR/fol.json")"
    echo "gaps over 50 ms between answered activations (both benches), longest first:"
    cat "$DIR/lead.jsonl" "$DIR/fol.jsonl" | jq -r 'select(.answered) | (.start_ms + (.micros / 1000))' | sort -g |
        awk 'NR > 1 && $1 - p > 50 { printf "%.1f ms after %s\n", $1 - p, strftime("%H:%M:%S", int(p / 1000), 1) "." sprintf("%03d", p % 1000) } { p = $1 }' |
        sort -g -r | head -10
    echo "AppendEntries timeouts logged by the nodes: $(cat "$DIR"/g?.log | grep -c 'error replication to target=[0-9]* error=timeout' || true)"
    totals http://127.0.0.1:9688 http://127.0.0.2:9688 http://127.0.0.3:9688
    kill -TERM "$p1" "$p2" "$p3"; wait "$p1" "$p2" "$p3" 2>/dev/null || true
}

echo "kms-cluster $(git rev-parse --short HEAD), $(nproc) cores, data in $DIR, kmsd $KMSD"
case "$what" in
single) single ;;
cluster) cluster ;;
million) million ;;
3m) three_million ;;
ab) ab ;;
gaps) gaps ;;
all) single; cluster; million; three_million ;;
*) echo "usage: $0 [single|cluster|million|3m|ab|gaps|all]" >&2; exit 2 ;;
esac
