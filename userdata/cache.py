"""Recent response bodies, kept while the index they were rendered from stays unchanged."""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ("ResponseCache",)


class ResponseCache:
    """Bodies by query, valid for one version of the index.

    A repeated query (a dashboard polling the same filters) is answered without searching the
    index or serialising again. The key must hold everything else that decides the answer (for
    /data: the image filter and the birth days the age filters allow on today's date); the first
    lookup at a new index version forgets every body.

    :param entries: bodies kept at most, the oldest dropped first
    :param max_body: bytes of a body at most; larger ones are not kept
    """

    def __init__(self, entries: int = 32, max_body: int = 256 * 1024) -> None:
        self.entries = entries
        self.max_body = max_body
        self._version: int | None = None
        self._bodies: dict[Hashable, bytes] = {}

    def __len__(self) -> int:
        return len(self._bodies)

    def get(self, version: int, key: Hashable) -> bytes | None:
        """The body stored for ``key`` at ``version`` of the index, or None."""
        if version != self._version:
            self._bodies.clear()
            self._version = version
            return None
        return self._bodies.get(key)

    def put(self, version: int, key: Hashable, body: bytes) -> None:
        """Keep ``body`` for ``key``, unless it is too large or ``version`` is not the current one."""
        if version != self._version or len(body) > self.max_body or self.entries <= 0:
            return
        if key not in self._bodies and len(self._bodies) >= self.entries:
            del self._bodies[next(iter(self._bodies))]
        self._bodies[key] = body
