"""A NATS server with JetStream of its own (Debian's nats-server) on a free loopback port, for the
benchmarks and the tests (tests/natsserver.py adds the tests' skip rule)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from .procs import find_program, free_port, stop_process

__all__ = ("NatsServer", "find_nats")


def find_nats() -> str | None:
    """Debian's nats-server (often in /usr/sbin, which a PATH may leave out)."""
    return find_program("nats-server")


class NatsServer:
    """``nats-server -js`` on a loopback port, its store in ``directory``; stopped and started
    again on both."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.directory / "js")]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server not accepting connections within {timeout} s")
            time.sleep(0.02)  # polled until the deadline above

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, 10)
