"""Watching a folder: file events become source objects for the pipeline to look at again.

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
import enum
import logging
import os
import stat
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Literal

from watchfiles import Change, awatch

from .backoff import DEFAULT_DELAYS, Backoff
from .names import rejected_name
from .objects import SourceObject, classify

__all__ = ("RESCAN", "ObjectOf", "Watcher", "folder_objects", "minio_objects")

logger = logging.getLogger("userdata.watcher")


class _Many(enum.Enum):
    RESCAN = "rescan"


#: What an ``ObjectOf`` gives for a path that names no one object but may stand for many: the
#: folder of the source objects (or one above it) appeared or went. Files made in a brand-new
#: folder can come before its watch does, so the watcher asks for a rescan instead.
RESCAN = _Many.RESCAN
#: What a changed path means: the source object it belongs to, RESCAN, or None (nothing).
ObjectOf = Callable[[str], "SourceObject | Literal[_Many.RESCAN] | None"]


def folder_objects(source_dir: Path, prefix: str) -> ObjectOf:
    """Paths of files directly in ``source_dir`` -> source objects."""
    directory = str(Path(source_dir).resolve())

    def object_of(path: str) -> SourceObject | Literal[_Many.RESCAN] | None:
        if os.path.dirname(path) != directory:
            return None
        name = os.path.basename(path)
        if rejected_name(name) is not None:
            return RESCAN  # no key, but the listing shows it rejected
        return classify(prefix + name, prefix)

    return object_of


def minio_objects(bucket_dir: Path, prefix: str) -> ObjectOf:
    """Paths in MinIO's ``<data-dir>/<bucket>`` -> the source objects they belong to."""
    bucket = Path(bucket_dir).name
    base = os.path.join(str(Path(bucket_dir).resolve()), *prefix.split("/")[:-1])
    warned: set[str] = set()

    def object_of(path: str) -> SourceObject | Literal[_Many.RESCAN] | None:
        if base == path or base.startswith(path + os.sep):
            return RESCAN
        rel = os.path.relpath(path, base)
        if rel.startswith(os.pardir):
            return None
        first, sep, _ = rel.partition(os.sep)
        key = prefix + first
        obj = classify(key, prefix)
        if obj is None:
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
        return obj

    return object_of


class Watcher:
    """Watches ``root`` and submits the source objects that changed paths belong to.

    Only names matter: whether an object was added, changed or deleted is for the pipeline to
    find out from the store (a rename is a delete and an add, and one batch can hold both for the
    same path).

    :param root: the folder to watch
    :param object_of: what a changed path means (:func:`folder_objects`, :func:`minio_objects`)
    :param submit: takes the source objects of each batch of file events
    :param recursive: watch the folders below ``root`` too
    :param on_rescan: called where file events cannot say what changed: when watching resumes
        after a failure, and when ``object_of`` gives :data:`RESCAN`
    :param debounce_ms: how long awatch gathers events into one batch
    :param step_ms: how often awatch looks for new events within a batch
    :param retry_delays: the backoff while the folder cannot be watched
    """

    def __init__(
        self,
        root: Path,
        object_of: ObjectOf,
        submit: Callable[[Iterable[SourceObject]], None],
        *,
        recursive: bool = False,
        on_rescan: Callable[[], object] = lambda: None,
        debounce_ms: int = 200,
        step_ms: int = 20,
        retry_delays: tuple[float, ...] = DEFAULT_DELAYS,
    ) -> None:
        self.root = str(Path(root).resolve())
        self.object_of = object_of
        self.submit = submit
        self.recursive = recursive
        self.on_rescan = on_rescan
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.stop_event = asyncio.Event()
        #: why the folder is not being watched, None while it is
        self.error: str | None = None
        self._backoff = Backoff(retry_delays)

    def problem(self) -> str | None:
        """For /health: why the folder is not being watched, None while it is."""
        return self.error

    def _wanted(self, change: Change, path: str) -> bool:
        return self.object_of(path) is not None

    async def run(self) -> None:
        """Watch until :attr:`stop_event` is set; a failing watch is started again."""
        while not self.stop_event.is_set():
            try:
                if self._backoff.failures:
                    self.on_rescan()
                logger.info("watching %s", self.root)
                watched = _identity(self.root)
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
                    meanings = {self.object_of(path) for _, path in changes}
                    if RESCAN in meanings:
                        self.on_rescan()
                    objects = {m for m in meanings if isinstance(m, SourceObject)}
                    if objects:
                        logger.debug("file events for %s", sorted(obj.key for obj in objects))
                        self.submit(objects)
                    # A watch follows the folder it began on: one removed, moved away, unmounted or
                    # made again is no longer watched, and says nothing. After every batch and at
                    # least every second (rust_timeout), the folder must still be that one.
                    if _identity(self.root) != watched:
                        raise FileNotFoundError(f"{self.root} was removed or replaced")
                    self.error = None  # the watch is up: reached on the first batch or timeout
                    self._backoff.succeeded()
                return
            except Exception as e:
                delay = self._backoff.failed()
                if _identity(self.root) is None:  # gone: look for it again often, it may be back soon
                    delay = min(delay, _MISSING_POLL)
                self.error = f"not watching {self.root}: {e}"
                logger.warning("%s; retrying in %.1f s", self.error, delay)
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), delay)


#: Seconds between looks for a watched folder that is gone.
_MISSING_POLL = 0.5


def _identity(path: str) -> tuple[int, int] | None:
    """Which folder ``path`` is now (device and inode), None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
