"""A NATS server with JetStream of the tests' own (Debian's nats-server), on a free loopback port.

Tests that need one skip with the reason where nats-server is missing, unless TESTS_REQUIRE_NATS
is set (as .ci/run does): then they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import suppress
from pathlib import Path

import pytest
from served import free_port

__all__ = ("NatsServer", "nats_binary")


def nats_binary() -> str:
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.access(p, os.X_OK)), None
    )
    if found is None:
        reason = "no nats-server (Debian's nats-server package) to run a NATS server"
        if os.environ.get("TESTS_REQUIRE_NATS"):
            pytest.fail(f"{reason} (TESTS_REQUIRE_NATS is set, so this is a failure)", pytrace=False)
        pytest.skip(reason)
    return found


class NatsServer:
    """``nats-server -js`` on a loopback port, its store in a folder; stopped and started again
    on both."""

    def __init__(self, binary: str, store: Path) -> None:
        self.binary, self.store, self.port = binary, store, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = store / "server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store / "js")]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"nats-server exited with {self.process.returncode}:\n{self.log.read_text()}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nats-server not accepting connections within {timeout} s")
            time.sleep(0.02)  # polled until the deadline above

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
