#!/usr/bin/env bash
# The aws CLI against the gateway: s3 mb/cp/ls/sync/rm/rb and s3api.
set -euo pipefail
export AWS_ACCESS_KEY_ID="$S3_AK" AWS_SECRET_ACCESS_KEY="$S3_SK" AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_PAGER=""
aws() { command aws --endpoint-url "$S3_ENDPOINT" "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/sub/deeper"
head -c 70000 /dev/urandom > "$work/src/one.bin"
head -c 9000000 /dev/urandom > "$work/src/sub/big.bin"   # multipart in the CLI (8 MiB threshold)
echo hello > "$work/src/sub/deeper/hello.txt"
echo "a file with spaces" > "$work/src/sub/with space & plus+.txt"

aws s3 mb s3://awscli
aws s3 cp --only-show-errors "$work/src/one.bin" s3://awscli/one.bin
aws s3 cp --only-show-errors s3://awscli/one.bin "$work/one.back"
cmp "$work/src/one.bin" "$work/one.back"
aws s3 sync --only-show-errors "$work/src" s3://awscli/tree
aws s3 ls s3://awscli/tree/ > "$work/top"; grep "PRE sub/" "$work/top" > /dev/null
aws s3 ls --recursive s3://awscli/tree/ > "$work/ls"
[ "$(wc -l < "$work/ls")" -eq 4 ] || { cat "$work/ls"; exit 1; }
grep -q "with space & plus+.txt" "$work/ls"
# A second sync uploads nothing.
[ -z "$(aws s3 sync "$work/src" s3://awscli/tree)" ]
aws s3 sync --only-show-errors s3://awscli/tree "$work/back"
diff -r "$work/src" "$work/back"
aws s3api put-object --bucket awscli --key api/obj --body "$work/src/one.bin" --content-type text/x-api --metadata k=v > /dev/null
aws s3api head-object --bucket awscli --key api/obj > "$work/head"
grep -q '"ContentType": "text/x-api"' "$work/head"
grep -q '"k": "v"' "$work/head"
[ "$(aws s3api list-objects-v2 --bucket awscli --prefix tree/sub/ --delimiter / --query 'length(Contents)')" = 2 ]
if aws s3api get-object --bucket awscli --key nope "$work/x" 2> "$work/err"; then exit 1; fi
grep -q NoSuchKey "$work/err"
if aws s3 rb s3://awscli 2> "$work/err"; then exit 1; fi
grep -q BucketNotEmpty "$work/err"
aws s3 rm --recursive s3://awscli > /dev/null
aws s3 rb s3://awscli
echo "aws cli round trip passed"
