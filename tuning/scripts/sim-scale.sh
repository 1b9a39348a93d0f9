#!/bin/bash
# Crawler cost against a simulated DHT of NODES nodes (issue 12, item 6).
# Loopback only: the swarm is dht-loadgen swarm, the crawler dht-hunter crawl
# with its defaults plus what loopback needs. Release binaries from
# $CARGO_TARGET_DIR (default /work/target-lead); results in /tmp/sim-NODES.
# usage: sim-scale.sh NODES TORRENTS SECS [CRAWL FLAGS...]
# (extra crawl flags, e.g. --no-table-turnover, go last)
# SWARM_ARGS: extra swarm flags (e.g. --full-nodes 100000; the swarm's
# default keeps 50,000 full nodes and makes the rest light).
# Every 60 s: the swarm's distinct nodes sampled (swarm.err, swarm-stats
# lines) and the crawler's counters (series.txt). SIM_DIR: work directory.
N=$1; T=$2; S=$3; shift 3; EXTRA="$*"
R=${CARGO_TARGET_DIR:-/work/target-lead}/release
W=${SIM_DIR:-/tmp/sim-$N}; rm -rf $W; mkdir -p $W
$R/dht-loadgen swarm --nodes $N --torrents $T --client-rate 0 --churn-fraction 0 --duration $((S+120)) --stats-every 60 $SWARM_ARGS > $W/swarm.out 2> $W/swarm.err &
SW=$!
for i in $(seq 1 600); do [ -s $W/swarm.out ] && break; sleep 0.5; done
BOOT=$(python3 -c "import json;print(' '.join('--bootstrap '+b for b in json.load(open('$W/swarm.out'))['bootstrap']))")
UP=$(python3 -c "import json;print(json.load(open('$W/swarm.out'))['startup_s'])")
SWRSS=$(awk '/VmRSS/{print $2}' /proc/$SW/status)
PORT=$((40000 + RANDOM % 10000)); MP=$((PORT+1))
$R/dht-hunter crawl --bind 127.0.0.1:$PORT $BOOT --allow-private --shards 1 --cores 0 --state-dir $W/state --db sqlite:$W/db.sqlite --metrics 127.0.0.1:$MP --duration $S $EXTRA > $W/crawl.out 2> $W/crawl.err &
CR=$!
t0=$(date +%s)
echo "t_s rss_kib cpu_s" > $W/samples
while kill -0 $CR 2>/dev/null; do
  now=$(( $(date +%s) - t0 ))
  rss=$(awk '/VmRSS/{print $2}' /proc/$CR/status 2>/dev/null)
  cpu=$(awk '{print ($14+$15)/100}' /proc/$CR/stat 2>/dev/null)
  [ -n "$rss" ] && echo "$now $rss $cpu" >> $W/samples
  if [ $now -eq $((S-5)) ] || [ $now -eq $((S-4)) ]; then curl -s 127.0.0.1:$MP/metrics > $W/metrics.txt; fi
  if [ $((now % 60)) -eq 0 ] && [ $now -gt 0 ] && [ "$now" != "$last" ]; then
    last=$now
    curl -s 127.0.0.1:$MP/metrics | grep -E "^dht_hunter_(nodes_known|table_turnovers_total|infohashes_discovered_total|harvest_total|queries_sent_total)" | sed "s/^/t=$now /" >> $W/series.txt
  fi
  sleep 1
done
kill $SW 2>/dev/null; wait $SW 2>/dev/null
echo "nodes=$N torrents=$T extra=[$EXTRA] swarm=[$SWARM_ARGS] swarm_startup_s=$UP swarm_rss_kib=$SWRSS"
tail -1 $W/samples
grep swarm-stats $W/swarm.err | tail -1
cat $W/series.txt 2>/dev/null
# The figures the run records need, then the rest of the crawl's counters.
grep -E "^dht_hunter_(nodes_known|table_turnovers_total|infohashes_discovered_total|infohashes_remembered|queries_sent_total|fetch_verified_total)" $W/metrics.txt
