#!/usr/bin/env bash
# Sequential throughput through the FUSE mount against the direct client,
# on the same cluster in the same run, and small files created through the
# mount per second.
# Starts `cairn server --nodes 3` (rep=3) on loopback and a mount of it.
# Usage: scripts/mount-bench.sh [SIZE=1GiB] [SMALL_FILES=2000]
set -euo pipefail
SIZE=${1:-1GiB}
SMALL=${2:-2000}
BIN=${CAIRN_BIN:-$(dirname "$0")/../target/release/cairn}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/cairn-mount-bench.XXXXXX")
SRC=$(mktemp /dev/shm/cairn-mount-bench.XXXXXX)
SERVER=""
cleanup() {
    fusermount3 -u -z "$DIR/mnt" 2>/dev/null || true
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    rm -rf "$DIR" "$SRC"
}
trap cleanup EXIT
export XDG_CONFIG_HOME=$DIR/cfg CAIRN_S3_LISTEN=off
"$BIN" server --data "$DIR/data" --listen 127.0.0.1:0 --nodes 3 > "$DIR/server.out" 2> "$DIR/server.log" &
SERVER=$!
until grep -q "try:" "$DIR/server.out" 2>/dev/null; do sleep 0.1; done
mkdir "$DIR/mnt"
"$BIN" mount "$DIR/mnt" --cache-dir "$DIR/cache" ${MOUNT_ARGS:-} > /dev/null 2>&1

BYTES=$(python3 -c "import sys; u={'k':1<<10,'m':1<<20,'g':1<<30}; s=sys.argv[1].lower().rstrip('ib'); print(int(s[:-1])*u[s[-1]] if s[-1] in u else int(s))" "$SIZE")
head -c "$BYTES" /dev/urandom > "$SRC"
secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); python3 -c "print($t1 - $t0)"; }
mibs() { python3 -c "print(round($BYTES / (1 << 20) / $1))"; }

put_s=$(secs "$BIN" put "$SRC" /direct 2> /dev/null)
get_s=$(secs sh -c "'$BIN' get /direct - > /dev/null")
# Through the mount: the time includes close, which uploads the staged file.
mw_s=$(secs dd if="$SRC" of="$DIR/mnt/viamount" bs=1M status=none)
mr_s=$(secs dd if="$DIR/mnt/viamount" of=/dev/null bs=1M status=none)
cmp "$SRC" "$DIR/mnt/viamount"
small=$(python3 - "$DIR/mnt" "$SMALL" <<'PY'
import os, sys, time
mnt, n = sys.argv[1], int(sys.argv[2])
os.mkdir(f"{mnt}/small")
data = os.urandom(4096)
t0 = time.time()
for i in range(n):
    with open(f"{mnt}/small/f{i:06}", "wb") as f:
        f.write(data)
print(round(n / (time.time() - t0)))
PY
)
python3 - <<PY
import json
d = dict(size=$BYTES,
         direct_write_mib_s=$(mibs "$put_s"), direct_read_mib_s=$(mibs "$get_s"),
         mount_write_mib_s=$(mibs "$mw_s"), mount_read_mib_s=$(mibs "$mr_s"),
         small_4k_files_per_s=$small)
d["write_ratio"] = round(d["mount_write_mib_s"] / d["direct_write_mib_s"], 2)
d["read_ratio"] = round(d["mount_read_mib_s"] / d["direct_read_mib_s"], 2)
print(json.dumps(d))
PY
