#!/usr/bin/env bash
# Starts a local 3-node kms-cluster on loopback: node i serves KMS on 127.0.0.i:1688,
# its admin API on 127.0.0.i:9688 and Raft/gRPC on 127.0.0.i:9689, with its data in
# ./data/cluster/node<i>. The nodes form the cluster by themselves from --peers.
# Ctrl-C stops all three (gracefully).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p kmsd -p kmsctl
peers="1=127.0.0.1:9689,2=127.0.0.2:9689,3=127.0.0.3:9689"
pids=()
for i in 1 2 3; do
    mkdir -p "data/cluster/node$i"
    target/release/kmsd --node-id "$i" --peers "$peers" \
        --listen "127.0.0.$i:1688" --admin-listen "127.0.0.$i:9688" \
        --cluster-listen "127.0.0.$i:9689" --data-dir "data/cluster/node$i" \
        "$@" 2>>"data/cluster/node$i.log" &
    pids+=("$!")
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM
echo "3 nodes starting; logs in data/cluster/node*.log. Try:"
echo "  target/release/kmsctl activate --host 127.0.0.2 --product \"Windows 10 Enterprise\""
echo "  target/release/kmsctl cluster status --cluster 127.0.0.1:9689"
wait
