#!/usr/bin/env bash
# Many small files through the mount against the local disk, in one run:
# `cp -r` of FILES files of 2 KiB in 50 directories, `stat` of each, `rm -rf`,
# the same copy by 8 writers at once, and a `git clone` of a repository of
# GIT_FILES files. The local figures use a directory on the same disk as the
# cluster's data.
# Starts `cairn server --nodes 3` (rep=3) on loopback and a mount of it.
# Usage: scripts/small-files-bench.sh [FILES=5000] [GIT_FILES=10000]
# MOUNT_ARGS adds `cairn mount` options (e.g. MOUNT_ARGS=--writeback).
set -euo pipefail
FILES=${1:-5000}
GIT_FILES=${2:-10000}
BIN=${CAIRN_BIN:-$(dirname "$0")/../target/release/cairn}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/cairn-small-bench.XXXXXX")
SRC=$(mktemp -d /dev/shm/cairn-small-bench.XXXXXX)
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
mkdir "$DIR/mnt" "$DIR/local"
"$BIN" mount "$DIR/mnt" --cache-dir "$DIR/cache" ${MOUNT_ARGS:-} > /dev/null 2>&1

# The source trees, in memory so reading them costs next to nothing.
python3 - "$SRC" "$FILES" "$GIT_FILES" <<'PY'
import os, sys
src, n, g = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = f"{src}/tree/d{i % 50:02}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06}", "wb") as f:
        f.write(os.urandom(2048))
for i in range(g):
    d = f"{src}/repo/m{i % 100:02}/s{i % 7}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/file{i:05}.c", "w") as f:
        f.write(f"int f{i}(void) {{ return {i}; }}\n" * (1 + i % 40))
PY
git -C "$SRC/repo" init -q
git -C "$SRC/repo" add -A
git -C "$SRC/repo" -c user.name=bench -c user.email=bench@localhost commit -q -m tree

secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); python3 -c "print($t1 - $t0)"; }
stat_all() { find "$1" -type f -print0 | xargs -0 stat -c %s > /dev/null; }
parallel_cp() { ls "$SRC/tree" | xargs -P8 -I{} cp -r "$SRC/tree/{}" "$1/"; }

# One pass over a target directory: name=seconds lines.
run() {
    local t=$1
    echo "cp=$(secs cp -r "$SRC/tree" "$t/tree")"
    echo "stat=$(secs stat_all "$t/tree")"
    echo "rm=$(secs rm -rf "$t/tree")"
    mkdir "$t/par"
    echo "cp8=$(secs parallel_cp "$t/par")"
    rm -rf "$t/par"
    echo "clone=$(secs git clone -q --no-hardlinks "file://$SRC/repo" "$t/clone")"
    rm -rf "$t/clone"
}
local_out=$(run "$DIR/local")
mount_out=$(run "$DIR/mnt")
python3 - "$FILES" "$GIT_FILES" "$local_out" "$mount_out" <<'PY'
import json, sys
n, g = int(sys.argv[1]), int(sys.argv[2])
parse = lambda s: {k: float(v) for k, v in (l.split("=") for l in s.split())}
loc, mnt = parse(sys.argv[3]), parse(sys.argv[4])
out = {"files": n, "git_files": g}
for op in ("cp", "stat", "rm", "cp8"):
    out[f"mount_{op}_files_s"] = round(n / mnt[op])
    out[f"local_{op}_files_s"] = round(n / loc[op])
    out[f"{op}_ratio"] = round(loc[op] / mnt[op], 3)
out["mount_clone_s"] = round(mnt["clone"], 2)
out["local_clone_s"] = round(loc["clone"], 2)
out["clone_times_local"] = round(mnt["clone"] / loc["clone"], 1)
print(json.dumps(out))
PY
