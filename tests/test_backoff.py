"""The one backoff every retrying part uses."""

from __future__ import annotations

from userdata.backoff import DEFAULT_DELAYS, Backoff


def test_delays_grow_with_failures_and_start_again_after_a_success() -> None:
    backoff = Backoff((1.0, 2.0, 5.0), jitter=0)
    assert [backoff.failed() for _ in range(5)] == [1.0, 2.0, 5.0, 5.0, 5.0]
    assert backoff.failures == 5
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.failed() == 1.0


def test_jitter_spreads_each_delay_within_its_fraction() -> None:
    delays = [Backoff((10.0,), jitter=0.1).failed() for _ in range(200)]
    assert all(9.0 <= d <= 11.0 for d in delays)
    assert len(set(delays)) > 100, "parts failing together do not all wait the same"


def test_no_delays_means_one_second_and_the_default_ends_at_thirty() -> None:
    assert Backoff((), jitter=0).failed() == 1.0
    backoff = Backoff(jitter=0)
    assert [backoff.failed() for _ in DEFAULT_DELAYS][-1] == 30.0
