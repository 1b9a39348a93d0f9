#!/usr/bin/env bash
# How KRPC answering scales with shards, on a machine with many cores.
#
# Usage: tuning/scripts/scaling.sh [BIN_DIR] [OUT_DIR]
# Needs release builds of dht-hunter and dht-loadgen in BIN_DIR
# (default target/release). Loopback only. For each shard count N the
# crawler runs on cores 0..N-1 and G flood generators (one process each,
# 64 source addresses each) run on the upper half of the cores, so server
# and load never share a core. Every run is bounded in time.
set -u
BIN=${1:-target/release}
OUT=${2:-${OUT:-/tmp/scaling}}
mkdir -p "$OUT"
CPUS=$(nproc)
HALF=$((CPUS / 2))
GENS=${GENS:-$HALF}
SECS=${SECS:-6}
# WINDOW > 0: closed loop (each generator keeps at most WINDOW queries in
# flight, so the offered load follows capacity); 0: open loop (overload).
WINDOW=${WINDOW:-256}
echo "cpus $CPUS, generators $GENS, window $WINDOW, $SECS s per point" | tee "$OUT/summary.txt"
grep -m1 "model name" /proc/cpuinfo | tee -a "$OUT/summary.txt"
uname -r | tee -a "$OUT/summary.txt"
for N in 1 2 4 8; do
    [ "$N" -le "$HALF" ] || continue
    PORT=$((21000 + N))
    STATE=$(mktemp -d)
    "$BIN/dht-hunter" --log-level warn crawl --bind 127.0.0.1:$PORT --shards $N --cores 0-$((N - 1)) \
        --allow-private --bootstrap 127.0.0.1:9 --state-dir "$STATE" \
        --inbound-per-ip-pps 10000000 --max-pps 100000000 --per-ip-pps 10000000 \
        --status never --duration $((SECS + 6)) > "$OUT/crawl-$N.log" 2>&1 &
    CRAWL=$!
    sleep 2
    PIDS=()
    for g in $(seq 0 $((GENS - 1))); do
        taskset -c $((HALF + g % HALF)) "$BIN/dht-loadgen" flood --target 127.0.0.1:$PORT \
            --sources 64 --source-base 127.$((20 + g)).0.1 --rate 0 --window $WINDOW --duration $SECS \
            --json > "$OUT/flood-$N-$g.json" 2> "$OUT/flood-$N-$g.err" &
        PIDS+=($!)
    done
    for p in "${PIDS[@]}"; do wait "$p"; done
    kill -TERM "$CRAWL" 2>/dev/null
    wait "$CRAWL"
    rm -rf "$STATE"
    cat "$OUT"/flood-$N-*.json | tr ',' '\n' | awk -v n=$N -F: '
        /"sent":/ {sent += $2} /"answered":/ {ans += $2} /"answers_per_sec":/ {aps += $2}
        END {printf "shards %d: sent %d, answered %d, answers/s %.0f, per shard %.0f\n", n, sent, ans, aps, aps / n}' \
        | tee -a "$OUT/summary.txt"
done
