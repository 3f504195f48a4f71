"""Recent response bodies, kept while the index they were rendered from stays unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sized
from dataclasses import dataclass
from typing import Generic, TypeVar

from multidict import CIMultiDictProxy

__all__ = ("Answer", "Body", "Page", "ResponseCache")

#: A body whole, or in parts to send one after the other (a large one).
Body = bytes | tuple[bytes, ...]
V = TypeVar("V", bound=Sized)


@dataclass(frozen=True, slots=True)
class Page:
    """A page's body, and the last key on it when another page follows (for its link)."""

    body: bytes
    last: str | None

    def __len__(self) -> int:
        return len(self.body)


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer, body and headers, as a request exactly like its own is given it again."""

    body: bytes
    headers: CIMultiDictProxy[str]  # copied by a Response faster than any other mapping

    def __len__(self) -> int:
        return len(self.body)


class ResponseCache(Generic[V]):
    """Bodies by query, valid for one version of the index.

    A repeated query (a dashboard polling the same filters) is answered without searching the
    index or serialising again. The key must hold everything else that decides the answer (for
    /data: the image filter and the birth days the age filters allow on today's date); the first
    lookup at a new index version forgets every body. Requests for a body being built wait for
    that one build (:meth:`shared`), so many clients asking for a large answer at once cost one.

    :param entries: bodies kept at most, the oldest dropped first
    :param max_body: bytes of a body at most; larger ones are not kept, but for the last two
        in parts (a large answer asked again and again is built once, compressed and plain)
    """

    def __init__(self, entries: int = 32, max_body: int = 256 * 1024) -> None:
        self.entries = entries
        self.max_body = max_body
        self._version: int | None = None
        self._bodies: dict[Hashable, V] = {}
        #: the last bodies in parts, kept whatever their size (two at most: they are large)
        self._large: dict[Hashable, V] = {}
        self._building: dict[tuple[int, Hashable], asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._bodies)

    def get(self, version: int, key: Hashable) -> V | None:
        """The body stored for ``key`` at ``version`` of the index, or None."""
        if version != self._version:
            self._bodies.clear()
            self._large.clear()
            self._version = version
            return None
        if self._large and (large := self._large.get(key)) is not None:  # mostly empty: no second lookup
            return large
        return self._bodies.get(key)

    async def shared(self, version: int, key: Hashable, build: Callable[[], V | Awaitable[V]]) -> V:
        """The body for ``key`` at ``version``: kept, being built for another request, or built now.

        ``build`` gives the body, or an awaitable of it where building takes turns with other
        requests (a large one): only such a build can be joined, and only it becomes a task.
        """
        body = self.get(version, key)
        if body is not None:
            return body
        building = self._building.get((version, key))
        if building is None:
            made = build()
            if not isinstance(made, Awaitable):
                self.put(version, key, made)
                return made
            building = self._building[version, key] = asyncio.ensure_future(made)
            building.add_done_callback(lambda done: self._built(version, key, done))
        return await asyncio.shield(building)

    def _built(self, version: int, key: Hashable, done: asyncio.Future[V]) -> None:
        del self._building[version, key]
        if not done.cancelled() and done.exception() is None:
            self.put(version, key, done.result())

    def put(self, version: int, key: Hashable, body: V) -> None:
        """Keep ``body`` for ``key``, unless it is too large or ``version`` is not the current one."""
        if version != self._version or self.entries <= 0:
            return
        if isinstance(body, tuple):
            self._large.pop(key, None)
            if len(self._large) >= 2:
                del self._large[next(iter(self._large))]
            self._large[key] = body
            return
        if len(body) > self.max_body:
            return
        if key not in self._bodies and len(self._bodies) >= self.entries:
            del self._bodies[next(iter(self._bodies))]
        self._bodies[key] = body
