"""Watching a folder: file events become object keys for the pipeline to look at again.

Two layouts map paths to keys:

- the folder store, where object ``<prefix><name>`` is the file ``<source_dir>/<name>``;
- MinIO's data directory (S3 mode with change hints), where object ``k`` is a *directory*
  ``<data-dir>/<bucket>/<k>/`` holding ``xl.meta`` and, for large objects, ``<uuid>/part.N``.
  Any event inside it names ``k``; the pipeline then reads ``k`` through S3 (gone: removed).
  inotify can miss files created in a brand-new directory, but not the directory itself, so
  mapping every path below the prefix to its first component catches every object.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

from watchfiles import Change, awatch

from .objects import classify

__all__ = ("RESCAN", "KeyOf", "Watcher", "folder_keys", "minio_keys")

logger = logging.getLogger("userdata.watcher")

KeyOf = Callable[[str], "str | None"]
#: What a ``KeyOf`` gives for a path that names no one object but may stand for many: the folder
#: of the source objects (or one above it) appeared or went. Files made in a brand-new folder can
#: come before its watch does, so the watcher asks for a rescan instead.
RESCAN = "*"


def folder_keys(source_dir: Path, prefix: str) -> KeyOf:
    """Paths of files directly in ``source_dir`` -> source object keys."""
    directory = str(Path(source_dir).resolve())

    def key_of(path: str) -> str | None:
        if os.path.dirname(path) != directory:
            return None
        key = prefix + os.path.basename(path)
        return key if classify(key, prefix) else None

    return key_of


def minio_keys(bucket_dir: Path, prefix: str) -> KeyOf:
    """Paths in MinIO's ``<data-dir>/<bucket>`` -> keys of the objects they belong to."""
    bucket = Path(bucket_dir).name
    base = os.path.join(str(Path(bucket_dir).resolve()), *prefix.split("/")[:-1])
    warned: set[str] = set()

    def key_of(path: str) -> str | None:
        if base == path or base.startswith(path + os.sep):
            return RESCAN
        rel = os.path.relpath(path, base)
        if rel.startswith(os.pardir):
            return None
        first, sep, _ = rel.partition(os.sep)
        key = prefix + first
        if classify(key, prefix) is None:
            return None
        if not sep and path not in warned and os.path.isfile(path):
            warned.add(path)
            logger.warning(
                "%s is a plain file in MinIO's data directory, not an object, so MinIO does not serve "
                "it: upload it through S3 instead, e.g. `mc cp %s ALIAS/%s/%s`",
                path,
                first,
                bucket,
                key,
            )
        return key

    return key_of


class Watcher:
    """Watches ``root`` and submits the keys that ``key_of`` gives for changed paths.

    Only names matter: whether a key was added, changed or deleted is for the pipeline to find
    out from the store (a rename is a delete and an add, and one batch can hold both for the same
        path). ``on_rescan`` is called where file events cannot say what changed: when watching
    resumes after a failure, and when ``key_of`` gives :data:`RESCAN`.
    """

    def __init__(
        self,
        root: Path,
        key_of: KeyOf,
        submit: Callable[[Iterable[str]], None],
        *,
        recursive: bool = False,
        on_rescan: Callable[[], object] = lambda: None,
        debounce_ms: int = 200,
        step_ms: int = 20,
        retry_delay: float = 2.0,
    ) -> None:
        self.root = str(Path(root).resolve())
        self.key_of = key_of
        self.submit = submit
        self.recursive = recursive
        self.on_rescan = on_rescan
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.retry_delay = retry_delay
        self.stop_event = asyncio.Event()
        #: why the folder is not being watched, None while it is
        self.error: str | None = None

    def _wanted(self, change: Change, path: str) -> bool:
        return self.key_of(path) is not None

    async def run(self) -> None:
        """Watch until :attr:`stop_event` is set; a failing watch is started again."""
        failures = 0
        while not self.stop_event.is_set():
            try:
                if failures:
                    self.on_rescan()
                logger.info("watching %s", self.root)
                async for changes in awatch(
                    self.root,
                    watch_filter=self._wanted,
                    debounce=self.debounce_ms,
                    step=self.step_ms,
                    stop_event=self.stop_event,
                    recursive=self.recursive,
                    yield_on_timeout=True,
                    rust_timeout=1000,
                ):
                    self.error = None  # the watch is up: reached on the first batch or timeout
                    keys = {key for _, path in changes if (key := self.key_of(path))}
                    if RESCAN in keys:
                        keys.discard(RESCAN)
                        self.on_rescan()
                    if keys:
                        logger.debug("file events for %s", sorted(keys))
                        self.submit(keys)
                return
            except Exception as e:
                delay = min(self.retry_delay * 2**failures, 30.0)
                failures += 1
                self.error = f"not watching {self.root}: {e}"
                logger.warning("%s; retrying in %g s", self.error, delay)
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), delay)
