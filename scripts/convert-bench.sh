#!/usr/bin/env bash
# Conversion between redundancies, end to end through the CLI: a 6-node
# `cairn server`, a SIZE file written as rep=3, then its directory set to
# ec=4+2 and the time until the file is erasure-coded, measured two ways
# back to back on fresh clusters: meta's background conversion (the
# default), and `cairn convert -r` through the client (with
# --no-auto-convert). Bytes are read back and compared after each.
# Usage: scripts/convert-bench.sh [SIZE_MIB=512] [RUNS=3]
set -euo pipefail
MIB=${1:-512}
RUNS=${2:-3}
C=${CAIRN_BIN:-$(dirname "$0")/../target/release/cairn}
W=$(mktemp -d "${TMPDIR:-/tmp}/cairn-convert.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
head -c "${MIB}M" /dev/urandom > "$W/f"
secs() { python3 -c "print(round($2-$1,2))"; }

# One run: a fresh cluster (extra server flags in $@), the file written,
# the cue set; prints the seconds until every chunk is ec=4+2.
run() {
    rm -rf "$W/d"
    "$C" server --data "$W/d" --listen 127.0.0.1:17540 --s3-listen off --no-client-conf \
        --nodes 6 --repair-bandwidth 0 "$@" > "$W/server.log" 2>&1 &
    local pid=$!
    T=(--meta 127.0.0.1:17540 --secret-file "$W/d/meta/client.key")
    until "$C" ls "${T[@]}" / >/dev/null 2>&1; do sleep 0.2; done
    "$C" put "${T[@]}" "$W/f" /d/f >/dev/null 2>&1
    local s e
    s=$(date +%s.%N)
    "$C" cue set "${T[@]}" /d ec=4+2 >/dev/null 2>&1
    if [ "$#" -gt 0 ]; then
        "$C" convert "${T[@]}" -r /d >/dev/null
    fi
    until "$C" locate "${T[@]}" /d/f --json | python3 -c "import json,sys;l=json.load(sys.stdin);sys.exit(0 if all(c.get('ec')=='4+2' for c in l['chunks']) else 1)"; do
        sleep 0.1
    done
    e=$(date +%s.%N)
    "$C" get "${T[@]}" /d/f "$W/out"
    cmp "$W/f" "$W/out"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    secs "$s" "$e"
}

for r in $(seq "$RUNS"); do
    bg=$(run)
    cli=$(run --no-auto-convert)
    python3 -c "print(f'run $r: background {$MIB/$bg:.0f} MiB/s ({$bg} s), cairn convert {$MIB/$cli:.0f} MiB/s ({$cli} s), background/convert {$cli/$bg:.2f}')"
done
