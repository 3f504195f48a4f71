"""Watching the source folder: file events become keys for the pipeline to look at again."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

from watchfiles import Change, awatch

from .objects import classify

__all__ = ("Watcher",)

logger = logging.getLogger("userdata.watcher")


class Watcher:
    """Turns changes to files directly in ``directory`` into object keys under ``prefix``.

    Only names matter: whether a key was added, changed or deleted is for the pipeline to find
    out from the store (a rename is a delete and an add, and one batch can hold both for the same
    path). ``on_restart`` is called when watching resumes after a failure, to catch up.
    """

    def __init__(
        self,
        directory: Path,
        prefix: str,
        submit: Callable[[Iterable[str]], None],
        *,
        on_restart: Callable[[], object] = lambda: None,
        debounce_ms: int = 200,
        step_ms: int = 20,
        retry_delay: float = 2.0,
    ) -> None:
        self.directory = str(Path(directory).resolve())
        self.prefix = prefix
        self.submit = submit
        self.on_restart = on_restart
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.retry_delay = retry_delay
        self.stop_event = asyncio.Event()
        #: why the folder is not being watched, None while it is
        self.error: str | None = None

    def _wanted(self, change: Change, path: str) -> bool:
        return os.path.dirname(path) == self.directory and self._key(path) is not None

    def _key(self, path: str) -> str | None:
        key = self.prefix + os.path.basename(path)
        return key if classify(key, self.prefix) else None

    async def run(self) -> None:
        """Watch until :attr:`stop_event` is set; a failing watch is started again."""
        failures = 0
        while not self.stop_event.is_set():
            try:
                if failures:
                    self.on_restart()
                logger.info("watching %s", self.directory)
                async for changes in awatch(
                    self.directory,
                    watch_filter=self._wanted,
                    debounce=self.debounce_ms,
                    step=self.step_ms,
                    stop_event=self.stop_event,
                    recursive=False,
                    yield_on_timeout=True,
                    rust_timeout=1000,
                ):
                    self.error = None  # the watch is up: reached on the first batch or timeout
                    keys = {key for _, path in changes if (key := self._key(path))}
                    if keys:
                        logger.debug("file events for %s", sorted(keys))
                        self.submit(keys)
                return
            except Exception as e:
                delay = min(self.retry_delay * 2**failures, 30.0)
                failures += 1
                self.error = f"not watching {self.directory}: {e}"
                logger.warning("%s; retrying in %g s", self.error, delay)
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), delay)
