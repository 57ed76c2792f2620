#!/usr/bin/env bash
# Cairn's S3 gateway beside another S3 server, in one run: the same load
# generator (`cairn bench --s3 --s3-peer`: signed HTTP/1.1, a large object
# PUT and GET on one connection, then small objects over 16 connections)
# against a temporary Cairn cluster's gateway and against the peer, in
# turns within each run; medians, spreads and ratios as JSON.
#
# Usage: scripts/s3-compare.sh URL ACCESS:SECRET [SIZE=1GiB] [RUNS=3] [NODES=1] [PEER_PID...]
#   URL           the peer's endpoint, http://HOST:PORT (start it yourself:
#                 Garage, MinIO, SeaweedFS, another Cairn ...)
#   ACCESS:SECRET a key of the peer's that may create a bucket
#   PEER_PID      the peer's server processes, for their CPU per GiB
# Environment: CAIRN_BIN (default target/release/cairn), PEER_REGION
# (default us-east-1; Garage's is "garage"), PEER_BUCKET (bench-s3),
# NODES sets Cairn's storage nodes (its redundancy is min(nodes, 3)):
# compare a peer with the same number of copies.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
URL=$1
KEY=$2
SIZE=${3:-1GiB}
RUNS=${4:-3}
NODES=${5:-1}
shift $(( $# < 5 ? $# : 5 ))
BIN=${CAIRN_BIN:-$(dirname "$0")/../target/release/cairn}
PIDS=()
for p in "$@"; do PIDS+=(--s3-peer-pid "$p"); done
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
CAIRN_BENCH_PEER_KEY=$KEY "$BIN" bench --s3 --nodes "$NODES" --size "$SIZE" --runs "$RUNS" \
    --s3-peer "$URL" --s3-peer-region "${PEER_REGION:-us-east-1}" \
    --s3-peer-bucket "${PEER_BUCKET:-bench-s3}" "${PIDS[@]}" > "$OUT"
python3 - "$OUT" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c, p = d["s3"], d["s3_peer"]
print(f"{'':18}{'cairn':>12}{'peer':>12}{'cairn/peer':>12}")
rows = [("PUT MiB/s", "put_mib_s", "put"), ("GET MiB/s", "get_mib_s", "get"),
        ("small PUT /s", "small_puts_per_s", "small_puts"), ("small GET /s", "small_gets_per_s", "small_gets")]
for name, k, r in rows:
    print(f"{name:18}{c[k]:>12}{p[k]:>12}{p['cairn_to_peer'][r]:>12}")
for w in ("put", "get"):
    if f"{w}_server_cpu_s_per_gib" in p:
        own = round(c[f"{w}_cpu_s_per_gib"] - p[f"{w}_cpu_s_per_gib"], 2)
        print(f"{w.upper()} CPU-s/GiB       {own:>12}{p[w + '_server_cpu_s_per_gib']:>12}"
              "   (cairn: its process less the load generator's)")
print(f"disk write {d['machine']['disk_write_mib_s']} MiB/s, read {d['machine']['disk_read_mib_s']} MiB/s (O_DIRECT); runs {d['runs']}; spreads in the JSON below")
print(json.dumps({"s3": c, "s3_peer": p, "spread": d["spread"]}, indent=1))
PY
