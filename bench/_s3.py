"""A local S3-compatible server for the benchmarks: moto's server in its own process on 127.0.0.1.

Its own process (not a thread of the benchmark) so that serving requests does not take the GIL from
the process being timed. It shares the machine's cores with everything else: figures against it are
informational (a real bucket has network latency instead of this server's CPU cost).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


class LocalS3:
    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("the local S3 server (moto) did not start")
                time.sleep(0.3)

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true", **CREDENTIALS}

    def use(self) -> None:
        """Point this process (and the Ray workers it starts afterwards) at the server."""
        os.environ.update(self.env())

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def upload_dir(self, local: str | Path, bucket: str, prefix: str, threads: int = 16) -> int:
        c, local = self.client(), Path(local)
        try:
            c.create_bucket(Bucket=bucket)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass
        files = [p for p in sorted(local.rglob("*")) if p.is_file()]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda p: c.put_object(Bucket=bucket, Key=f"{prefix}/{p.relative_to(local).as_posix()}",
                                                 Body=p.read_bytes()), files))
        return len(files)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
