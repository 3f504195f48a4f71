"""Which object keys are source objects, and whose."""

from __future__ import annotations

from typing import Literal, NamedTuple

from .names import bad_name

__all__ = ("SourceObject", "classify")


class SourceObject(NamedTuple):
    """A key classified as a user's CSV or PNG: what producers hand the pipeline."""

    key: str
    kind: Literal["csv", "png"]
    user_id: str


def classify(key: str, prefix: str) -> SourceObject | None:
    """What ``key`` is to the index: a user's CSV or PNG, or None for anything to ignore.

    Ignored: keys outside the prefix or in a sub-folder of it, hidden and temporary files
    (``.x``, ``x~``; ``*.tmp`` and ``*.part`` have other extensions), other extensions, and
    names no key may have (:func:`~userdata.names.bad_name`).
    Extensions match in any case.

    >>> classify("src-data/0001.CSV", "src-data/")
    SourceObject(key='src-data/0001.CSV', kind='csv', user_id='0001')
    """
    if not key.startswith(prefix):
        return None
    # The checks cheapest first: this runs for every key of every listing.
    suffix = key[-4:].lower()
    if suffix == ".csv":
        kind: Literal["csv", "png"] = "csv"
    elif suffix == ".png":
        kind = "png"
    else:
        return None  # also every hidden or temporary name (x~, x.tmp, x.part) but .x.csv / .x.png
    user_id = key[len(prefix) : -4]
    if not user_id or user_id[0] == "." or "/" in user_id or bad_name(key):
        return None
    return _new(SourceObject, (key, kind, user_id))


# NamedTuple's own constructor is a Python function; this is the same object made in C, and
# classify runs for every key an incremental listing names anew.
_new = tuple.__new__
