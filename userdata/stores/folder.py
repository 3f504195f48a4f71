"""The folder store: objects are plain files under ``<data-dir>/<bucket>/``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Collection, Iterable
from itertools import islice
from pathlib import Path
from typing import TypeVar

from ..names import bad_name, rejected_name
from . import MAX_OBJECT_SIZE, PRESENT, Listing, ObjectError, StoreUnavailable, Version, content_etag, too_large
from .folder_write import replace_if

__all__ = ("FolderStore", "ThreadTrials")

logger = logging.getLogger("userdata.stores.folder")
T = TypeVar("T")
#: Files per thread hop at the least; a large batch goes in a few large chunks per thread, as
#: every hop costs far more than a file read from the page cache.
_CHUNK = 128
#: Files per round of read_many: each round runs on one thread or on all (see read_many).
_BATCH = 4096
#: Every this many batches, read_many times one on one thread and one on all its threads (ThreadTrials).
_TRIAL_EVERY = 8


_NS_BITS = (1 << 64) - 1


def _version(st: os.stat_result) -> Version:
    """Size and mtime in one int (mtime's 64 bits below the size's): under half a tuple of them."""
    return st.st_size << 64 | (st.st_mtime_ns & _NS_BITS)


class FolderStore:
    """A MinIO-shaped tree of plain files: object ``k`` of the bucket is ``<data_dir>/<bucket>/<k>``.

    :param data_dir: the data directory
    :param bucket: the bucket's folder in it
    :param prefix: the source prefix (a folder of the bucket's, or "")
    :param threads: threads that read at most, where that is faster than one (see read_many)
    :param max_object_size: bytes a source object may have at most (read_many)
    """

    def __init__(
        self, data_dir: Path, bucket: str, prefix: str, *, threads: int = 2, max_object_size: int = MAX_OBJECT_SIZE
    ) -> None:
        self.root = Path(data_dir) / bucket
        self._root_str = str(self.root)
        self.prefix = prefix
        self.source_dir = self.root / prefix if prefix else self.root
        self._threads = asyncio.Semaphore(threads)
        self._thread_count = threads
        self.max_object_size = max_object_size
        #: source-object names of the last listing that cannot be keys: escaped name -> why
        self.bad_names: dict[str, str] = {}

    def describe(self) -> str:
        return f"folder {self.source_dir}"

    async def open(self) -> None:
        await asyncio.to_thread(self.ensure_source_dir)

    def ensure_source_dir(self) -> None:
        """Create the source folder if missing, so a new data directory can be watched.

        A failure is only logged: listing will report the store unavailable, and the service
        starts degraded instead of not at all.
        """
        try:
            self.source_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            logger.warning("cannot create source folder %s: %s", self.source_dir, e)

    async def list_objects(self, *, versions: bool = True) -> Listing:
        return await asyncio.to_thread(self._list_objects, versions)

    def _list_objects(self, versions: bool) -> Listing:
        listing: Listing = {}
        bad: dict[str, str] = {}
        try:
            with os.scandir(self.source_dir) as entries:
                for entry in entries:
                    name = entry.name
                    try:
                        if not entry.is_file():  # folders, FIFOs, sockets, devices, dangling links
                            continue
                        if bad_name(name):  # no key; listed as rejected if it would be a source object
                            if (rejected := rejected_name(self.prefix + name)) is not None:
                                bad[rejected[0]] = rejected[1]
                            continue
                        wanted = versions and name[-4:].lower() != ".png"
                        listing[self.prefix + name] = _version(entry.stat()) if wanted else PRESENT
                    except OSError:  # removed while listed, a symlink loop, no permission: not a file
                        continue
        except (FileNotFoundError, NotADirectoryError) as e:
            # A missing source folder is more likely an unmounted volume than every user
            # deleted: keep serving what is indexed.
            raise StoreUnavailable(f"source folder {self.source_dir} not found") from e
        except OSError as e:
            raise StoreUnavailable(f"cannot list {self.source_dir}: {e.strerror}") from e
        self.bad_names = bad
        return listing

    async def read_many(
        self, keys: Collection[str], parse: Callable[[bytes], T]
    ) -> dict[str, tuple[Version, T] | ObjectError | None]:
        # Each body is parsed at once by the thread that read it: bytes are never held in bulk,
        # only outcomes come back, and the event loop does none of the parsing.
        def read_parsed(key: str) -> tuple[Version, T] | ObjectError | None:
            found = self._read_one(key, self.max_object_size)
            return found if found is None or isinstance(found, ObjectError) else (found[0], parse(found[1]))

        out: dict[str, tuple[Version, T] | ObjectError | None] = {}
        trials = ThreadTrials(self._thread_count)
        for i, batch in enumerate(_chunks(keys, _BATCH)):
            threads = trials.threads(i)
            started = time.perf_counter()
            out.update(await self._in_threads(read_parsed, batch, threads))
            trials.took(i, threads, (time.perf_counter() - started) / len(batch))
        return out

    async def stat_many(self, keys: Collection[str]) -> dict[str, Version | ObjectError | None]:
        return await self._in_threads(self._stat_one, keys, 1)

    async def _in_threads(self, work: Callable[[str], T], keys: Collection[str], threads: int) -> dict[str, T]:
        """``work(key)`` for every key, on up to ``threads`` threads."""

        def run_chunk(chunk: list[str]) -> dict[str, T]:
            return {key: work(key) for key in chunk}

        async def run(chunk: list[str]) -> dict[str, T]:
            async with self._threads:
                return await asyncio.to_thread(run_chunk, chunk)

        if threads == 1:
            return await run(list(keys))
        out: dict[str, T] = {}
        size = max(_CHUNK, -(-len(keys) // (threads * 4)))
        for part in await asyncio.gather(*(run(chunk) for chunk in _chunks(keys, size))):
            out.update(part)
        return out

    def _read_one(self, key: str, limit: int | None = None) -> tuple[Version, bytes] | ObjectError | None:
        """An object is a regular file (symlinks followed); anything else does not exist. One
        past ``limit`` bytes is an ObjectError: read not at all when its size says so, else no
        further than the limit (it grew meanwhile)."""
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; no effect on regular files.
            fd = os.open(f"{self._root_str}/{key}", os.O_RDONLY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None  # a symlink loop is not a file
            return ObjectError(e.strerror or str(e))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            if limit is not None and st.st_size > limit:
                return too_large(st.st_size, limit)
            data = os.read(fd, st.st_size + 1)
            if len(data) != st.st_size:  # a short read, or it grew since the fstat: read to the end
                chunks, size = [data], len(data)
                while chunk := os.read(fd, 1 << 16):
                    chunks.append(chunk)
                    size += len(chunk)
                    if limit is not None and size > limit:
                        return too_large(size, limit)
                data = b"".join(chunks)
        except OSError as e:
            return ObjectError(e.strerror or str(e))
        finally:
            os.close(fd)
        return _version(st), data

    def _stat_one(self, key: str) -> Version | None:
        try:
            st = os.stat(self.root / key)
        except OSError:
            return None  # missing, or a symlink loop: not a file
        return _version(st) if stat.S_ISREG(st.st_mode) else None

    async def read(self, key: str) -> bytes | None:
        found = await asyncio.to_thread(self._read_one, key)
        if isinstance(found, ObjectError):
            raise found
        return None if found is None else found[1]

    async def write(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self.root / key, data)

    async def etag(self, key: str) -> str | None:
        """The quoted MD5 of the file's bytes, as write_if compares it (see :mod:`.folder_write`)."""
        data = await self.read(key)
        return None if data is None else await asyncio.to_thread(content_etag, data)

    async def write_if(self, key: str, data: bytes, etag: str | None) -> str:
        """The ETag is the quoted MD5 of the bytes, as S3 gives one PUT (see :mod:`.folder_write`)."""
        return await asyncio.to_thread(replace_if, self.root / key, key, data, etag, self._write)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with _suppress_oserror():
                os.unlink(tmp)
            raise

    async def remove_leftovers(self, key: str) -> int:
        return await asyncio.to_thread(self._remove_leftovers, self.root / key)

    @staticmethod
    def _remove_leftovers(path: Path) -> int:
        """Remove the temporary files of writes of ``path`` that never got to their rename (the
        process was killed): ``_write``'s names, ``.<name>.<random>.tmp``."""
        removed = 0
        with contextlib.suppress(OSError):
            for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
                    removed += 1
                    logger.info("removed %s, left by a write that was interrupted", leftover)
        return removed

    async def close(self) -> None:
        pass


class ThreadTrials:
    """Which reads faster now, one thread or ``most``: from the page cache one thread is (more
    only take turns at the GIL), from the disk more overlap the waits.

    Of every ``every`` batches, the first runs on one thread and the second on ``most``, each
    timed; the batches between follow the faster.

    >>> trials = ThreadTrials(2, every=4)
    >>> [trials.threads(i) for i in range(2)]
    [1, 2]
    >>> trials.took(0, 1, 0.5); trials.took(1, 2, 0.2); trials.threads(2)
    2
    """

    def __init__(self, most: int, *, every: int = _TRIAL_EVERY) -> None:
        self.most = most
        self.every = every
        self._seconds_per_file = {1: 0.0, most: 0.0}
        self._faster = 1

    def threads(self, batch: int) -> int:
        """How many threads batch number ``batch`` is to be read on."""
        trial = batch % self.every
        return 1 if trial == 0 else self.most if trial == 1 else self._faster

    def took(self, batch: int, threads: int, seconds_per_file: float) -> None:
        """Batch number ``batch`` took ``seconds_per_file`` on ``threads`` threads."""
        trial = batch % self.every
        if trial < 2:
            self._seconds_per_file[threads] = seconds_per_file
            if trial == 1:
                self._faster = min(self._seconds_per_file, key=self._seconds_per_file.__getitem__)


def _chunks(items: Iterable[str], size: int) -> Iterable[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], OSError)
