#!/usr/bin/env bash
# The remote tier, end to end through the CLI: a second Cairn (1 node, its
# S3 gateway) is the remote store of a 3-node `cairn server`; a SIZE file is
# written under tier=remote:far and a copy under a local directory; then the
# time until it is offloaded, and reads of both (RUNS times), are measured.
# The offloaded read goes through a storage node that fetches each chunk
# from the store (a node's cache keeps 64 MiB of them).
# Usage: scripts/tier-bench.sh [SIZE_MIB=256] [RUNS=3]
set -euo pipefail
MIB=${1:-256}
RUNS=${2:-3}
C=${CAIRN_BIN:-$(dirname "$0")/../target/release/cairn}
W=$(mktemp -d "${TMPDIR:-/tmp}/cairn-tier.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
# Fixed loopback ports: run one at a time.
"$C" server --data "$W/b" --listen 127.0.0.1:17520 --s3-listen 127.0.0.1:17580 \
    --no-client-conf --nodes 1 > "$W/b.log" 2>&1 &
BT=(--meta 127.0.0.1:17520 --secret-file "$W/b/meta/client.key")
until "$C" ls "${BT[@]}" / >/dev/null 2>&1; do sleep 0.2; done
"$C" mkdir "${BT[@]}" /far
"$C" key create tier "${BT[@]}" --json > "$W/key.json"
python3 -c "import json;k=json.load(open('$W/key.json'));print('access_key_id='+k['access_key']);print('secret_access_key='+k['secret_key'])" > "$W/creds"
"$C" server --data "$W/a" --listen 127.0.0.1:17530 --s3-listen off --no-client-conf --nodes 3 \
    --tier "far=s3://far/t?endpoint=http://127.0.0.1:17580&creds=$W/creds" \
    --tier-interval 1s --tier-rate 0 --tier-cache 64MiB > "$W/a.log" 2>&1 &
AT=(--meta 127.0.0.1:17530 --secret-file "$W/a/meta/client.key")
until "$C" ls "${AT[@]}" / >/dev/null 2>&1; do sleep 0.2; done
head -c "${MIB}M" /dev/urandom > "$W/f"
"$C" mkdir "${AT[@]}" /cold >/dev/null
"$C" mkdir "${AT[@]}" /hot >/dev/null
"$C" cue set "${AT[@]}" /cold tier=remote:far >/dev/null
"$C" put "${AT[@]}" "$W/f" /hot/f >/dev/null
"$C" put "${AT[@]}" "$W/f" /cold/f >/dev/null
t1=$(date +%s.%N)
until "$C" tier status "${AT[@]}" --json | python3 -c "import json,sys;t=json.load(sys.stdin);r=[x for x in t if x['name']=='far'][0];sys.exit(0 if r['bytes']>=$MIB<<20 else 1)"; do sleep 0.2; done
t2=$(date +%s.%N)
"$C" tier status "${AT[@]}"
echo "offload: ${MIB} MiB in $(python3 -c "print(round($t2-$t1,2))") s, $(python3 -c "print(round($MIB/($t2-$t1)))") MiB/s"
for r in $(seq "$RUNS"); do
    s=$(date +%s.%N); "$C" get "${AT[@]}" /hot/f "$W/out"; e=$(date +%s.%N); cmp "$W/f" "$W/out"
    loc=$(python3 -c "print($MIB/($e-$s))")
    s=$(date +%s.%N); "$C" get "${AT[@]}" /cold/f "$W/out"; e=$(date +%s.%N); cmp "$W/f" "$W/out"
    rem=$(python3 -c "print($MIB/($e-$s))")
    python3 -c "print(f'run $r: local read {$loc:.0f} MiB/s, offloaded read {$rem:.0f} MiB/s, offloaded/local {$rem/$loc:.2f}')"
done
