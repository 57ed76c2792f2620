#!/usr/bin/env bash
# rclone against the gateway: mkdir, copy, ls, check, copy back, delete.
set -euo pipefail
# A CA bundle from the environment makes rclone's plain-HTTP transport fail.
unset AWS_CA_BUNDLE
export RCLONE_CONFIG=/dev/null
export RCLONE_CONFIG_CAIRN_TYPE=s3 RCLONE_CONFIG_CAIRN_PROVIDER=Other
export RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID="$S3_AK" RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY="$S3_SK"
export RCLONE_CONFIG_CAIRN_ENDPOINT="$S3_ENDPOINT" RCLONE_CONFIG_CAIRN_REGION=us-east-1
export RCLONE_CONFIG_CAIRN_FORCE_PATH_STYLE=true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/a/b"
head -c 123456 /dev/urandom > "$work/src/a/data.bin"
head -c 7000000 /dev/urandom > "$work/src/a/b/big.bin"
echo small > "$work/src/top.txt"
rc() { rclone --retries 1 --low-level-retries 1 --s3-upload-cutoff 5M --s3-chunk-size 5M "$@"; }
rc mkdir cairn:rclone
rc copy "$work/src" cairn:rclone/set
[ "$(rc lsf -R --files-only cairn:rclone/set | sort | tr '\n' ' ')" = "a/b/big.bin a/data.bin top.txt " ]
rc check "$work/src" cairn:rclone/set
# Listing with versions (ListObjectVersions) sees the same files.
[ "$(rc lsf -R --files-only --s3-versions cairn:rclone/set | sort | tr '\n' ' ')" = "a/b/big.bin a/data.bin top.txt " ]
rc copy cairn:rclone/set "$work/back"
diff -r "$work/src" "$work/back"
rc delete cairn:rclone/set
[ -z "$(rc lsf -R cairn:rclone)" ]
rc rmdir cairn:rclone
echo "rclone round trip passed"
