#!/usr/bin/env bash
# The many-core run: shard scaling of KRPC answering, one-shard fetch rate,
# and the demo at 10,000 nodes with 8 shards. Writes everything under $OUT.
# Usage: tuning/scripts/device.sh BIN_DIR [FETCH_BENCH_BINARY [KRPC_BENCH_BINARY]]
set -u
BIN=${1:-target/release}
FETCH=${2:-}
KRPC=${3:-}
OUT=${OUT:-/tmp/device}
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || true
ulimit -l unlimited 2>/dev/null || true
echo "== scaling" | tee "$OUT/device.txt"
timeout 150 "$(dirname "$0")/scaling.sh" "$BIN" "$OUT/scaling" 2>&1 | tee -a "$OUT/device.txt"
if [ -n "$FETCH" ]; then
    echo "== fetch (one shard)" | tee -a "$OUT/device.txt"
    timeout 90 "$FETCH" --bench 10000 256 2>&1 | tail -6 | tee -a "$OUT/device.txt"
fi
if [ -n "$KRPC" ]; then
    echo "== krpc_answer (one shard vs raw echo; libtorrent is not installed here)" | tee -a "$OUT/device.txt"
    KRPC_BENCH_SKIP_LT=1 KRPC_BENCH_SECS=3 timeout 150 "$KRPC" --bench 2>&1 | tail -40 | tee -a "$OUT/device.txt"
fi
echo "== demo, 10000 nodes, 5000 torrents, 8 shards" | tee -a "$OUT/device.txt"
timeout 110 "$BIN/dht-hunter" --log-level warn demo --nodes 10000 --torrents 5000 --shards 8 \
    --timeout 100 --state-dir "$OUT/demo" --json --status never 2>&1 | tail -3 | tee -a "$OUT/device.txt"
rm -rf "$OUT/demo"
