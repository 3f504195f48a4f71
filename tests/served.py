"""``userdata serve`` as a subprocess on a loopback port, as users run it."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Sequence
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


async def role_at(session: aiohttp.ClientSession, url: str) -> str | None:
    """The role (writer or reader) the ``userdata serve`` at ``url`` gives in its /health; None
    while it gives none (not loaded yet, or not listening)."""
    try:
        async with session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
            body = await r.json()
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None
    return body.get("role") if isinstance(body, dict) else None


async def one_writer(urls: Sequence[str], timeout: float) -> int:
    """Wait until exactly one of the ``userdata serve`` replicas at ``urls`` says writer in its
    /health, all in the same round of asking, and the others reader; which one it is."""
    found: list[str | None] = []
    async with aiohttp.ClientSession() as session:

        async def one() -> bool:
            found[:] = [await role_at(session, url) for url in urls]
            return found.count("writer") == 1 and found.count("reader") == len(urls) - 1

        await wait_until(one, timeout, message=lambda: f"for one writer among {list(urls)}: {found}")
    return found.index("writer")
