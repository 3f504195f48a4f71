"""``userdata serve`` as a subprocess on a loopback port, as users run it."""

from __future__ import annotations

import asyncio
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from helpers import wait_until

START_TIMEOUT = 30.0  # seconds for serve to answer /health
STOP_TIMEOUT = 10.0  # seconds for serve to exit after a signal


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A ``userdata serve`` subprocess on a loopback port."""

    process: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def get(self, path: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=5)) as r,
        ):
            return r.status, await r.json()

    async def healthy(self) -> bool:
        if self.process.returncode is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.output()}")
        try:
            status, _ = await self.get("/health")
        except (TimeoutError, aiohttp.ClientError):
            return False
        return status == 200

    async def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        await wait_until(self.healthy, timeout, message=lambda: f"for /health on {self.port}:\n{self.output()}")

    async def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        try:
            return await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"serve still running {STOP_TIMEOUT} s after {sig.name}:\n{self.output()}") from None

    async def kill(self) -> None:
        self.process.kill()
        await self.process.wait()
