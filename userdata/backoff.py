"""Backoff for every part that retries: the store, output.csv, the database mirror, the watcher."""

from __future__ import annotations

import random

__all__ = ("DEFAULT_DELAYS", "Backoff")

#: Seconds to wait after the first, second, ... failure in a row; the last repeats.
DEFAULT_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Backoff:
    """Delays that grow with each failure in a row, and start again after a success.

    Each delay is spread by up to ``jitter`` (a fraction) either way, so that parts, or
    replicas, that failed together do not all try again at the same moment.

    :param delays: seconds after the first, second, ... failure; the last repeats
        (empty: one second)
    :param jitter: the fraction each delay may be spread by, 0 for none

    >>> backoff = Backoff((1.0, 4.0), jitter=0)
    >>> backoff.failed(), backoff.failed(), backoff.failed()
    (1.0, 4.0, 4.0)
    >>> backoff.succeeded(); backoff.failed()
    1.0
    """

    def __init__(self, delays: tuple[float, ...] = DEFAULT_DELAYS, *, jitter: float = 0.1) -> None:
        self.delays = delays or (1.0,)
        self.jitter = jitter
        #: failures since the last success
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; returns how long to wait before trying again."""
        delay = self.delays[min(self.failures, len(self.delays) - 1)]
        self.failures += 1
        return delay * random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else delay

    def succeeded(self) -> None:
        """Start again from the first delay."""
        self.failures = 0
