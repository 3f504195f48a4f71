"""Files rejected for a birthts in the future, read again when it comes (no rescan needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from .objects import SourceObject, classify
from .reconcile import Reconciler

__all__ = ("FutureBirthts",)

#: The longest wait: a far date is looked at again now and then, and a clock set anew corrects itself.
_LONGEST = 3600.0


class FutureBirthts:
    """Submits each CSV the reconciler holds rejected for a birthts in the future once that
    time has come: read again then, it is a valid user.

    :param reconciler: whose :attr:`~userdata.reconcile.Reconciler.future` to follow
    :param submit: the pipeline's :meth:`~userdata.pipeline.Pipeline.submit`
    """

    def __init__(self, reconciler: Reconciler, submit: Callable[[Iterable[SourceObject]], None]) -> None:
        self.reconciler = reconciler
        self.submit = submit
        self._timer: asyncio.TimerHandle | None = None
        #: key -> the birthts it was submitted for: the pipeline has it (and retries it) until
        #: its read says otherwise, so it is not submitted again meanwhile
        self._asked: dict[str, int] = {}

    def mind(self) -> None:
        """Set the timer for the earliest of them not submitted yet (after each change applied)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        future, asked = self.reconciler.future, self._asked
        for key in [key for key, birthts in asked.items() if future.get(key) != birthts]:
            del asked[key]  # read since (valid now, gone, or another birthts)
        waiting = [birthts for key, birthts in future.items() if key not in asked]
        if waiting:
            wait = (min(waiting) - time.time() * 1000) / 1000 + 0.001
            self._timer = asyncio.get_running_loop().call_later(min(max(0.0, wait), _LONGEST), self._came)

    def _came(self) -> None:
        self._timer = None
        now_ms = time.time() * 1000
        prefix = self.reconciler.prefix
        due = {key: b for key, b in self.reconciler.future.items() if b <= now_ms and key not in self._asked}
        self._asked.update(due)
        self.submit(obj for key in due if (obj := classify(key, prefix)) is not None)
        self.mind()
