"""Whether this replica may write output.csv and its hint, and how: the writer's side of issue 17.

Without an election every write is a plain one, or none at all on a ``--read-only`` replica. With
one (:class:`userdata.election.Election`), a write is tried only while this replica is the writer,
checked right before it, and is conditional on the ETag this replica last wrote (the first one
after each win unconditional): a deposed writer's write cannot replace the new writer's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from ..stores import PreconditionFailed, Store

__all__ = ("NotWriting", "WriteGate")


class NotWriting(Exception):
    """This replica does not write now (a reader, or read-only): nothing was written, no failure."""


class WriteGate:
    """Writes objects to ``store`` while ``may_write()``; conditionally when ``conditional``.

    :param store: where the objects go
    :param may_write: asked right before each write (``lambda: election.is_writer``, say)
    :param read_only: never write, nor tidy up (a ``--read-only`` replica: another one writes)
    :param conditional: each write conditional on the ETag of the last one (after :meth:`forget`,
        unconditional)
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
        self._etags: dict[str, str] = {}

    def forget(self) -> None:
        """The next write of each key is unconditional (this replica has just become the writer)."""
        self._etags.clear()

    async def tidy(self, *keys: str) -> None:
        """Remove what interrupted writes of ``keys`` left behind; never on a --read-only replica
        (another one's write may be under way), and never raises."""
        if self.read_only:
            return
        for key in keys:
            with contextlib.suppress(OSError):
                await self.store.remove_leftovers(key)

    async def write(self, key: str, data: bytes) -> None:
        """Write ``data`` to ``key``; raises NotWriting when this replica may not write, and
        PreconditionFailed (the ETag forgotten: the next try is unconditional) when another
        replica wrote it meanwhile; OSError and StoreUnavailable as the store does."""
        if not self.may_write():
            raise NotWriting(key)
        if not self.conditional:
            await self.store.write(key, data)
            return
        try:
            self._etags[key] = await self.store.write_if(key, data, self._etags.get(key))
        except PreconditionFailed:
            self._etags.pop(key, None)
            raise
