#!/usr/bin/env bash
# Time to restore full redundancy after a storage node is lost.
# Starts meta and 4 storage nodes (rep=3) on loopback, writes SIZE of data,
# SIGKILLs one node, and measures from the moment it is declared dead until
# `cairn cluster status` shows no chunk short of redundancy.
# Usage: scripts/repair-time.sh [SIZE=2GiB] [BANDWIDTH=0 (unlimited)]
set -euo pipefail
SIZE=${1:-2GiB}
BW=${2:-0}
BIN=${CAIRN_BIN:-$(dirname "$0")/../target/release/cairn}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/cairn-repair.XXXXXX")
PIDS=()
cleanup() { kill -9 "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

"$BIN" meta --data "$DIR/meta" --listen 127.0.0.1:0 --dead-after 5s --repair-interval 1s \
    --repair-bandwidth "$BW" --repair-parallelism 4 > "$DIR/meta.out" 2> "$DIR/meta.log" &
PIDS+=($!)
until grep -q "listening on" "$DIR/meta.out" 2>/dev/null; do sleep 0.1; done
META=$(awk '/listening on/ {print $NF}' "$DIR/meta.out")
export CAIRN_META=$META CAIRN_SECRET_FILE=$DIR/meta/client.key XDG_CONFIG_HOME=$DIR/cfg
for i in 0 1 2 3; do
    "$BIN" storage --data "$DIR/node-$i" --meta "$META" --listen 127.0.0.1:0 \
        --secret-file "$DIR/meta/cluster.secret" --reserve 0 > "$DIR/node-$i.out" 2> "$DIR/node-$i.log" &
    PIDS+=($!)
done
live() { "$BIN" cluster status --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(n["state"]=="live" for n in s["nodes"]))'; }
until [ "$(live)" = 4 ]; do sleep 0.2; done

BYTES=$(python3 -c "import sys; u={'k':1<<10,'m':1<<20,'g':1<<30}; s=sys.argv[1].lower().rstrip('ib'); print(int(s[:-1])*u[s[-1]] if s[-1] in u else int(s))" "$SIZE")
head -c "$BYTES" /dev/urandom > "$DIR/data"
"$BIN" put "$DIR/data" /data
rm "$DIR/data"
VICTIM_PID=${PIDS[1]}
kill -9 "$VICTIM_PID"
status() { "$BIN" cluster status --json; }
until status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if any(n["state"]=="dead" for n in s["nodes"]) else 1)'; do sleep 0.1; done
T0=$(date +%s.%N)
until status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["under_replicated_chunks"]==0 else 1)'; do sleep 0.2; done
T1=$(date +%s.%N)
status | python3 -c "
import json,sys
s=json.load(sys.stdin); secs=$T1-$T0
copied=s['repair']['copies_done']
print(json.dumps({'file_bytes': $BYTES, 'repair_seconds': round(secs,2), 'copies_made': copied,
                  'bandwidth_limit': '$BW', 'note': 'measured from the node being declared dead (5 s after SIGKILL)'}))"
