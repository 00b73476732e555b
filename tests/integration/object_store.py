"""A local S3-compatible object store (moto's server) for a broker that keeps its data.

Tansu, the embedded broker, stores in memory by default; given ``s3://bucket/`` it stores
topics, committed offsets and group state in an object store instead, so a broker process can
be killed and started again with everything it had acknowledged. moto's server answers the S3
API on a loopback port; it is a test dependency (``moto[server]``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import TracebackType

from streamer.broker import free_port, stop_process, wait_for_port


class ObjectStore:
    """moto's S3 server on a free port, with one bucket; ``broker_env`` is what Tansu needs."""

    def __init__(self, bucket: str = "tansu", log_path: Path | None = None) -> None:
        self.bucket = bucket
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> str:
        return f"s3://{self.bucket}/"

    @property
    def broker_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> "ObjectStore":
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        if out is not subprocess.DEVNULL:
            out.close()
        wait_for_port("127.0.0.1", self.port, 30)
        self._client().create_bucket(Bucket=self.bucket)
        return self

    def object_count(self) -> int:
        """How many objects the broker has written (proof it stores here, not in memory)."""
        return int(self._client().list_objects_v2(Bucket=self.bucket).get("KeyCount", 0))

    def _client(self):  # type: ignore[no-untyped-def]
        import boto3  # comes with moto

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")

    def stop(self) -> None:
        stop_process(self.process, timeout_s=5)

    def __enter__(self) -> "ObjectStore":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
