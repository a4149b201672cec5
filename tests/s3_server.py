"""A real S3-compatible server on 127.0.0.1 for tests: moto's `ThreadedMotoServer` on a free port.

Clients reach it exactly as they reach AWS, through `AWS_ENDPOINT_URL` and the standard credential
variables (`env()`); pyarrow's S3 client, Ray's workers and boto3 all read those. `auth(True)`
switches the server's request authentication on (unknown keys are refused with 403), as
`INITIAL_NO_AUTH_ACTION_COUNT=0` would.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from pathlib import Path

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class S3Server:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def env(self, credentials: bool = True) -> dict[str, str]:
        """The variables a client needs (no instance-metadata lookups: there is no EC2 here)."""
        out = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
               "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        if credentials:
            out.update(CREDENTIALS)
        return out

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **{
            "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]})

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def upload_dir(self, local: str | Path, bucket: str, prefix: str) -> int:
        """Upload every file under `local` to `s3://bucket/prefix/...`; returns the number of files."""
        c, local, n = self.client(), Path(local), 0
        for p in sorted(local.rglob("*")):
            if p.is_file():
                c.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(local).as_posix()}")
                n += 1
        return n

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def auth(self, on: bool) -> None:
        """Request authentication on (unknown credentials get 403) or off (moto's default)."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0" if on else b"inf",
                                     method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def stop(self) -> None:
        self._server.stop()
