"""Shared set-up of the client scripts: endpoint and keys come from the
environment the Rust test sets."""
import os

import boto3
from botocore.config import Config

ENDPOINT = os.environ["S3_ENDPOINT"]


def client(ak=None, sk=None, **cfg):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=ak or os.environ["S3_AK"],
        aws_secret_access_key=sk or os.environ["S3_SK"],
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            **cfg,
        ),
    )


def code(exc):
    return exc.response["Error"]["Code"]


def expect_error(want, fn, *a, **kw):
    from botocore.exceptions import ClientError

    try:
        fn(*a, **kw)
    except ClientError as e:
        got = code(e)
        assert got == want, f"expected {want}, got {got}: {e}"
        return e
    raise AssertionError(f"expected {want}, the call succeeded")
