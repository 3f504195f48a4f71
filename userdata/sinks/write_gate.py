"""Whether this replica may write output.csv and its hint, and how: the writer's side of issue 17.

Without an election every write is a plain one, or none at all on a ``--read-only`` replica. With
one (:class:`userdata.election.Election`), a write is tried only while this replica is the writer,
checked right before it, and is conditional on the ETag of the object as this replica last saw
it: a deposed writer's write cannot replace the new writer's.

After each win (:meth:`WriteGate.forget`) the first write of a key looks at the object first: if
it holds these very bytes (the predecessor wrote them), nothing is written, as nothing changed;
else the write is conditional on the ETag seen (or, where there was no object, on there being
none), so that a write landing between the look and the PUT is not replaced blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ..stores import ABSENT, PreconditionFailed, Store, content_etag

__all__ = ("NotWriting", "WriteGate")


class NotWriting(Exception):
    """This replica does not write now (a reader, or read-only): nothing was written, no failure."""


class WriteGate:
    """Writes objects to ``store`` while ``may_write()``; conditionally when ``conditional``.

    :param store: where the objects go
    :param may_write: asked right before each write (``lambda: election.is_writer``, say)
    :param read_only: never write, nor tidy up (a ``--read-only`` replica: another one writes)
    :param conditional: each write conditional on the ETag last seen of the object (after
        :meth:`forget`, first looked at: see the module)
    """

    def __init__(
        self,
        store: Store,
        may_write: Callable[[], bool] | None = None,
        *,
        conditional: bool = False,
        read_only: bool = False,
    ) -> None:
        self.store = store
        self.read_only = read_only
        self.may_write: Callable[[], bool] = (lambda: False) if read_only else may_write or (lambda: True)
        self.conditional = conditional
        #: key -> the ETag its next write is conditional on (ABSENT: on there being no object); a key
        #: absent is looked at first
        self._etags: dict[str, str] = {}

    def forget(self) -> None:
        """Look at each key again before its next write (this replica has just become the writer,
        or another replica wrote meanwhile)."""
        self._etags.clear()

    async def tidy(self, *keys: str) -> None:
        """Remove what interrupted writes of ``keys`` left behind; never on a --read-only replica
        (another one's write may be under way), and never raises."""
        if self.read_only:
            return
        for key in keys:
            with contextlib.suppress(OSError):
                await self.store.remove_leftovers(key)

    async def write(self, key: str, data: bytes) -> bool:
        """Write ``data`` to ``key``; False, nothing written, when a look (the first write of a key
        after :meth:`forget`) found the store holding these bytes already.

        Raises NotWriting when this replica may not write, and PreconditionFailed (the ETag
        forgotten: the next try looks again) when another replica wrote it meanwhile; ObjectError,
        OSError and StoreUnavailable as the store does.
        """
        if not self.may_write():
            raise NotWriting(key)
        if not self.conditional:
            await self.store.write(key, data)
            return True
        if key not in self._etags:
            seen = await self.store.etag(key)
            if seen is not None and seen == await asyncio.to_thread(content_etag, data):
                self._etags[key] = seen  # what the predecessor wrote: the next write is conditional on it
                return False
            self._etags[key] = ABSENT if seen is None else seen
            if not self.may_write():  # the look took a round trip: still the writer?
                raise NotWriting(key)
        try:
            self._etags[key] = await self.store.write_if(key, data, self._etags[key])
        except PreconditionFailed:
            # Never written unconditionally: a store that refuses the ETags it gives fails each
            # write (reported, tried again after a backoff) rather than risk replacing another's.
            self._etags.pop(key, None)
            raise
        return True
