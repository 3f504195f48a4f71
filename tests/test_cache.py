"""ResponseCache: bodies live for one index version, within bounds of count and size."""

from __future__ import annotations

from userdata.cache import Body, ResponseCache


def test_a_body_is_kept_for_its_version_only() -> None:
    cache: ResponseCache[Body] = ResponseCache()
    assert cache.get(1, "q") is None
    cache.put(1, "q", b"one")
    assert cache.get(1, "q") == b"one"
    assert cache.get(1, "other") is None
    assert cache.get(2, "q") is None  # the index changed: everything is forgotten
    assert len(cache) == 0
    assert cache.get(1, "q") is None  # even if asked about the old version again


def test_a_body_of_a_version_that_is_no_longer_current_is_not_kept() -> None:
    cache: ResponseCache[Body] = ResponseCache()
    cache.get(1, "q")
    cache.get(2, "q")
    cache.put(1, "q", b"stale")
    assert cache.get(2, "q") is None
    assert cache.get(1, "q") is None


def test_the_oldest_body_goes_first_when_full() -> None:
    cache: ResponseCache[Body] = ResponseCache(entries=3)
    cache.get(7, "a")
    for key in "abcd":
        cache.put(7, key, key.encode())
    assert len(cache) == 3
    assert [cache.get(7, key) for key in "abcd"] == [None, b"b", b"c", b"d"]
    cache.put(7, "b", b"b again")  # replacing a body evicts nothing
    assert [cache.get(7, key) for key in "bcd"] == [b"b again", b"c", b"d"]


def test_large_bodies_are_not_kept() -> None:
    cache: ResponseCache[Body] = ResponseCache(max_body=4)
    cache.get(1, "a")
    cache.put(1, "small", b"1234")
    cache.put(1, "large", b"12345")
    assert cache.get(1, "small") == b"1234"
    assert cache.get(1, "large") is None


def test_no_entries_keeps_nothing() -> None:
    cache: ResponseCache[Body] = ResponseCache(entries=0)
    cache.get(1, "a")
    cache.put(1, "a", b"x")
    assert cache.get(1, "a") is None


def test_the_last_two_bodies_in_parts_are_kept_whatever_their_size() -> None:
    cache: ResponseCache[Body] = ResponseCache(max_body=4)
    cache.get(1, "a")
    for key in ["json", "gzip", "csv"]:
        cache.put(1, key, (b"12345", key.encode()))
    assert [cache.get(1, key) for key in ["json", "gzip", "csv"]] == [None, (b"12345", b"gzip"), (b"12345", b"csv")]
    assert cache.get(2, "csv") is None  # forgotten with the rest when the index changes
