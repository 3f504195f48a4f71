"""Object stores: where source objects are listed and read, and output.csv is written.

Every store speaks in object keys (``src-data/1000.csv``) within one bucket, and gives each
object an opaque version (size and mtime on disk, the ETag in S3) that changes when it does,
made one int where it can be (:func:`etag_version`, the folder's own): a catalog keeps one per
object, and an int costs about half a tuple of two or an ETag's string.
A listing gives an image PRESENT instead: only whether a user has one matters, and one shared
value costs nothing per image.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Hashable
from typing import Protocol, TypeVar

__all__ = (
    "ABSENT",
    "MAX_OBJECT_SIZE",
    "PRESENT",
    "Listing",
    "ObjectError",
    "PreconditionFailed",
    "Store",
    "StoreUnavailable",
    "Version",
    "content_etag",
    "etag_version",
    "too_large",
)

Version = Hashable
#: key -> version of every object directly under the source prefix
Listing = dict[str, Version]
#: The version listed for an image (and by the folder for every object where none was asked for).
PRESENT: Version = ("present",)
T = TypeVar("T")
#: Bytes a source object may have at most (far above any user's CSV): a larger one is rejected
#: unread, and no read holds more, so one huge file costs neither memory nor time.
MAX_OBJECT_SIZE = 1 << 20


class StoreUnavailable(ConnectionError):
    """The store cannot be reached or listed; what is already indexed stays as it is."""


class ObjectError(Exception):
    """One object exists but cannot be read (permissions, say); the store itself works."""


class PreconditionFailed(Exception):
    """A conditional write found the object changed (or gone) since the ETag it was given, and
    left it as it was: someone else wrote it (a writer deposed meanwhile, or the one that deposed us)."""

    def __init__(self, key: str, etag: str) -> None:
        super().__init__(f"{key} changed since ETag {etag}")
        self.key = key
        self.etag = etag


#: The ETag for :meth:`Store.write_if` that means "only if there is no object" (If-None-Match: *).
ABSENT = "*"


def content_etag(data: bytes) -> str:
    """The ETag S3 gives an object of one PUT, quoted MD5 of its bytes; the folder store's too.

    >>> content_etag(b"")
    '"d41d8cd98f00b204e9800998ecf8427e"'
    """
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


_MD5_ETAG = re.compile(r'"([0-9a-f]{32})"')


def etag_version(etag: str) -> Version:
    """The version of an object of this ETag: the int of its MD5 where it is one (nearly always),
    else the ETag itself. Distinct ETags give distinct versions: an int never equals a str.

    >>> etag_version('"d41d8cd98f00b204e9800998ecf8427e"') == 0xD41D8CD98F00B204E9800998ECF8427E
    True
    >>> etag_version('"0ab1-2"')
    '"0ab1-2"'
    """
    md5 = _MD5_ETAG.fullmatch(etag)
    return etag if md5 is None else int(md5[1], 16)


def too_large(size: int, limit: int) -> ObjectError:
    """The error of an object past the size limit."""
    return ObjectError(f"{size:,} bytes or more, larger than the limit of {limit:,} (--max-object-size)")


class Store(Protocol):
    """What the pipeline and the sinks need of a store."""

    @property
    def bad_names(self) -> dict[str, str]:
        """Names of source objects (``*.csv``, ``*.png``) the last listing found but left out, as
        no key may be such a name (see :mod:`userdata.names`): escaped name -> why."""
        ...

    def describe(self) -> str:
        """Where the store is, for logs and /health."""
        ...

    async def open(self) -> None:
        """Get ready; an unreachable store is no error here (listing will say so)."""
        ...

    async def list_objects(self, *, versions: bool = True) -> Listing:
        """Objects directly under the source prefix (not in sub-folders).

        With ``versions=False`` every version is :data:`PRESENT`, a placeholder: a caller about
        to read every object gets them from the reads, and making them would cost a stat (the
        folder) or an int (S3) per object.
        """
        ...

    async def read_many(
        self, keys: Collection[str], parse: Callable[[bytes], T]
    ) -> dict[str, tuple[Version, T] | ObjectError | None]:
        """Version and ``parse(body)`` of each key, None where the object does not exist (any more).

        An object larger than the store's ``max_object_size`` is an ObjectError, read no further.

        ``parse`` runs as the bodies arrive, so a large batch is never held as bytes; it must not
        raise, and may run on another thread (the folder store parses where it reads).
        """
        ...

    async def stat_many(self, keys: Collection[str]) -> dict[str, Version | ObjectError | None]:
        """Version of each key without its body, None where it does not exist."""
        ...

    async def read(self, key: str) -> bytes | None:
        """One object's body (any key in the bucket), None if it does not exist."""
        ...

    async def write(self, key: str, data: bytes) -> None:
        """Replace one object (any key in the bucket) whole: readers see the old or the new."""
        ...

    async def etag(self, key: str) -> str | None:
        """The ETag of object ``key`` (any key in the bucket) as :meth:`write_if` compares it, None
        if it does not exist; raises ObjectError when only it cannot be looked at."""
        ...

    async def write_if(self, key: str, data: bytes, etag: str | None) -> str:
        """:meth:`write`, only if the object is still the one ``etag`` names (None: unconditionally;
        :data:`ABSENT`: only if there is none); returns the ETag of what it holds now, to pass to
        the next call.

        Raises PreconditionFailed, the object left alone, when it changed since ``etag`` or is gone,
        unless it holds exactly ``data`` already (an earlier try of this very write landed, its
        answer lost): then that ETag is returned and nothing written.
        """
        ...

    async def remove_leftovers(self, key: str) -> int:
        """Remove what interrupted writes of ``key`` left behind (none in S3); how many."""
        ...

    async def close(self) -> None: ...
