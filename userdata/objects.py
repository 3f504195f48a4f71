"""Which object keys are source objects, and whose."""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ("SourceObject", "classify")


class SourceObject(NamedTuple):
    kind: Literal["csv", "png"]
    user_id: str


def classify(key: str, prefix: str) -> SourceObject | None:
    """What ``key`` is to the index: a user's CSV or PNG, or None for anything to ignore.

    Ignored: keys outside the prefix or in a sub-folder of it, hidden and temporary files
    (``.x``, ``x~``; ``*.tmp`` and ``*.part`` have other extensions), other extensions.
    Extensions match in any case.

    >>> classify("src-data/0001.CSV", "src-data/")
    SourceObject(kind='csv', user_id='0001')
    """
    if not key.startswith(prefix):
        return None
    name = key[len(prefix) :]
    if not name or "/" in name or name.startswith(".") or name.endswith("~"):
        return None
    suffix = name[-4:].lower()
    if suffix == ".csv":
        kind: Literal["csv", "png"] = "csv"
    elif suffix == ".png":
        kind = "png"
    else:
        return None
    return _new(SourceObject, (kind, name[:-4]))


# NamedTuple's own constructor is a Python function; this is the same object made in C, and
# classify runs for every key of every listing.
_new = tuple.__new__
