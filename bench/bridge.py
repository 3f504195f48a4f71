"""MinIO's NATS publisher, played for SeaweedFS: its filer's metadata events as bucket notifications.

SeaweedFS sends no S3 bucket notifications. ``weed filer.meta.tail`` prints each metadata change
of its filer (a create, an overwrite, a delete) as it happens; this bridge turns those under the
bucket's prefix into MinIO-shaped events (as MinIO's ``nats`` target with ``jetstream=on``
publishes them) on a JetStream subject. On purpose it duplicates some events and swaps some with
the next one, as MinIO's at-least-once delivery may: the service must not care. Until the stream
exists it keeps events and tries again, as MinIO's ``queue_dir`` does.

Run as ``python -m bench.bridge`` by :class:`Bridge`. It prints ``probe`` each time it sees the
bucket's ``bridge-probe`` object change (how a caller knows it is following), and at SIGTERM a
last line of JSON counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

__all__ = ("PROBE", "Bridge", "minio_event")

PROBE = "bridge-probe"
HOLD = 0.2  # seconds a swapped event waits at most for the one it goes after


def minio_event(bucket: str, key: str, created: bool) -> bytes:
    """A MinIO bucket notification of ``key``, its key URL-escaped as MinIO's are."""
    name = "s3:ObjectCreated:Put" if created else "s3:ObjectRemoved:Delete"
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventName": name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key)}},
    }
    return json.dumps({"EventName": name, "Key": f"{bucket}/{key}", "Records": [record]}).encode()


def changes(event: dict[str, Any], root: str) -> list[tuple[str, bool]]:
    """The (key, created) pairs of one filer metadata event under ``root`` (``/buckets/B/``):
    a rename is a delete and a create; folders are left out."""
    note = event.get("eventNotification") or {}
    old, new = note.get("oldEntry") or {}, note.get("newEntry") or {}
    directory = event.get("directory", "")
    new_path = f"{note.get('newParentPath') or directory}/{new['name']}" if new else None
    found = []
    if old and not old.get("isDirectory") and (old_path := f"{directory}/{old['name']}") != new_path:
        found.append((old_path, False))
    if new_path is not None and not new.get("isDirectory"):
        found.append((new_path, True))
    return [(path[len(root) :], created) for path, created in found if path.startswith(root)]


class _Publisher:
    """Publishes to JetStream in order, duplicating and swapping some; retries until acknowledged."""

    def __init__(self, js: Any, subject: str, rng: random.Random, duplicate: float, swap: float) -> None:
        self.js, self.subject, self.rng = js, subject, rng
        self.duplicate, self.swap = duplicate, swap
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.counts = {"events": 0, "published": 0, "duplicated": 0, "swapped": 0, "retries": 0}

    def put(self, payload: bytes) -> None:
        self.counts["events"] += 1
        self.queue.put_nowait(payload)

    async def run(self) -> None:
        held: bytes | None = None
        while True:
            try:
                payload = await asyncio.wait_for(self.queue.get(), HOLD) if held else await self.queue.get()
            except TimeoutError:
                assert held is not None
                await self._send(held)  # nothing came to go before it
                held = None
                continue
            if held is not None:  # the swap: the later event first
                await self._send(payload)
                await self._send(held)
                held = None
            elif self.rng.random() < self.swap:
                self.counts["swapped"] += 1
                held = payload
            else:
                await self._send(payload)

    async def _send(self, payload: bytes) -> None:
        times = 2 if self.rng.random() < self.duplicate else 1
        self.counts["duplicated"] += times - 1
        for _ in range(times):
            while True:
                try:
                    await self.js.publish(self.subject, payload, timeout=2)
                    break
                except Exception:  # no stream yet, or NATS away: kept and tried again, as MinIO's queue
                    self.counts["retries"] += 1
                    await asyncio.sleep(0.2)
            self.counts["published"] += 1
        self.queue.task_done()


async def _follow(args: argparse.Namespace) -> dict[str, int]:
    import nats  # a test dependency, as this bridge is the tests'

    nc = await nats.connect(args.nats, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    publisher = _Publisher(nc.jetstream(), args.subject, random.Random(args.seed), args.duplicate, args.swap)
    root = f"/buckets/{args.bucket}/"
    tail = await asyncio.create_subprocess_exec(
        args.weed,
        "filer.meta.tail",
        f"-filer={args.filer}",
        f"-pathPrefix={root}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
    )
    sending = asyncio.create_task(publisher.run())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    reading = asyncio.create_task(_read(tail, root, args, publisher))
    await asyncio.wait([reading, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    with contextlib.suppress(TimeoutError):  # what was seen goes out first
        await asyncio.wait_for(publisher.queue.join(), 5)
    for task in (reading, sending):
        task.cancel()
    if tail.returncode is None:
        tail.terminate()
        await tail.wait()
    await nc.close()
    return publisher.counts


async def _read(tail: asyncio.subprocess.Process, root: str, args: argparse.Namespace, publisher: _Publisher) -> None:
    # filer.meta.tail prints indented JSON objects one after another: decoded as they complete.
    decoder, buffer = json.JSONDecoder(), ""
    assert tail.stdout is not None
    while chunk := await tail.stdout.read(65536):
        buffer += chunk.decode()
        while True:
            buffer = buffer.lstrip()
            try:
                event, end = decoder.raw_decode(buffer)
            except json.JSONDecodeError:
                break  # the rest of this object is still to come
            buffer = buffer[end:]
            for key, created in changes(event, root):
                if key == PROBE:
                    print("probe", flush=True)
                elif key.startswith(args.prefix):
                    publisher.put(minio_event(args.bucket, key, created))


class Bridge:
    """The bridge as a process of its own, started and stopped by a test or a benchmark."""

    def __init__(
        self,
        weed: str,
        filer: str,
        bucket: str,
        prefix: str,
        nats_url: str,
        subject: str,
        *,
        seed: int = 1,
        duplicate: float = 0.1,
        swap: float = 0.1,
        log: Path | None = None,
    ) -> None:
        self.args = [
            *("--weed", weed, "--filer", filer, "--bucket", bucket, "--prefix", prefix),
            *("--nats", nats_url, "--subject", subject, "--seed", str(seed)),
            *("--duplicate", str(duplicate), "--swap", str(swap)),
        ]
        self.process: subprocess.Popen[str] | None = None
        self.counts: dict[str, int] = {}
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self, probe: Callable[[], None], timeout: float = 30.0) -> None:
        """Start it, and return once it has seen ``probe()`` (a write of the bucket's
        :data:`PROBE` object) come through: from then on no change is missed."""
        root = Path(__file__).resolve().parent.parent
        # A process group of its own, with the tail it starts: see :meth:`stop`.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.bridge", *self.args],
            cwd=root,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        stdout = self.process.stdout
        assert stdout is not None

        # Read all along, so that the pipe never fills; the last line is the counts.
        def read() -> None:
            for line in stdout:
                self._lines.put(line.strip())

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe()
            with contextlib.suppress(queue.Empty):  # the tail may not follow yet: probe again
                if self._lines.get(timeout=1.0) == "probe":
                    return
        self.stop()
        raise RuntimeError(f"the bridge saw no probe within {timeout} s")

    def stop(self) -> dict[str, int]:
        """Stop it once what it saw is published; its counts (events, published, duplicated, swapped).

        Killed if it does not end within 15 s, and then whatever is left of its process group
        too: its ``weed filer.meta.tail``, which it stops itself only when its SIGTERM handler
        runs (not when it is killed, or dies before it has installed that handler)."""
        if self.process is None:
            return self.counts
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # The group outlives its leader while a member is alive, and its id is not reused meanwhile.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(5)  # to the end of its output, which the process closed
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
        with contextlib.suppress(queue.Empty):
            while line := self._lines.get(timeout=1.0):
                if line.startswith("{"):
                    self.counts = json.loads(line)
                    break
        return self.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("weed", "filer", "bucket", "prefix", "nats", "subject"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duplicate", type=float, default=0.1, help="share of events published twice")
    parser.add_argument("--swap", type=float, default=0.1, help="share of events swapped with the next")
    counts = asyncio.run(_follow(parser.parse_args()))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
