"""The catalog's hint: each source key's version and rejection, kept beside output.csv.

Written with output.csv, from the same slices of users (see
:meth:`~userdata.sinks.output_csv.OutputWriter`), so each user's keys and versions in it are
those the user's row of output.csv was rendered with. A restart that finds both, and finds them
a pair, lists the store and reads only the objects whose versions differ from the hint's (see
:meth:`~userdata.reconcile.Reconciler.resume`).

It is only ever a hint: it names the digest of the output.csv it was written with, the bucket,
the prefix, the size limit and the version of the rules files were judged by, and any doubt
(missing, unreadable, another format, another output.csv or any of those) means a full read.
A version the store would never list (an object that could not be read) is written as null,
and so is that of a file rejected for a birthts in the future, which time alone may make
valid: the next start reads both again (or finds them gone).

The object is JSON, each key followed by its version, the reasons apart (they are few), the
meta last so that it is written once output.csv's digest is known:
``{"entries": [key, version, key, version, ...], "rejected": {key: reason}, "meta": {...}}``.
Flat, so that reading it back makes no object per entry beyond what the catalog keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..catalog import UNREAD, Catalog, Hint, each_key
from ..records import FUTURE_BIRTHTS
from ..stores import PRESENT, Version

__all__ = ("FORMAT", "HEAD", "InvalidHint", "decode", "encode_entries", "encode_tail", "entries", "hint_key")

#: Bumped whenever the file's meaning changes: a hint of another format is not read.
FORMAT = 1

HEAD = b'{"entries":['


class InvalidHint(ValueError):
    """The hint cannot be used: the service reads everything instead."""


def hint_key(output_key: str) -> str:
    """Where the hint of ``output_key`` lives: beside it, named after it."""
    return output_key + ".catalog.json"


def entries(catalog: Catalog, user_ids: Iterable[str], rejected: dict[str, str]) -> list[Any]:
    """Key, version, key, version... of these users' CSVs and images, as the catalog holds them
    now; the reasons of those rejected put in ``rejected``."""
    versions, reasons, csv_keys, png_keys = catalog.versions, catalog.rejected, catalog.csv_keys, catalog.png_keys
    out: list[Any] = []
    for user_id in user_ids:
        for key in each_key(csv_keys.get(user_id)):
            version = versions.get(key)
            reason = reasons.get(key)
            if reason is not None:
                rejected[key] = reason
                if reason.startswith(FUTURE_BIRTHTS):
                    version = None
            out += (key, None if version == UNREAD else version)
        for key in each_key(png_keys.get(user_id)):
            out += (key, versions.get(key))
    return out


def encode_entries(batch: list[Any], *, first: bool) -> bytes:
    """``batch`` as the next part of the entries array (a comma first unless ``first``)."""
    if not batch:
        return b""
    body = orjson.dumps(batch)[1:-1]
    return body if first else b"," + body


def encode_tail(rejected: dict[str, str], where: dict[str, object], *, output_digest: bytes) -> bytes:
    """The end of the object: the reasons, and the meta a restart checks before it trusts the
    rest (``where``: what the verdicts depend on, such as the bucket, prefix and size limit)."""
    meta = {"format": FORMAT, **where, "output": output_digest.hex()}
    return b'],"rejected":' + orjson.dumps(rejected) + b',"meta":' + orjson.dumps(meta) + b"}"


def decode(data: bytes, where: dict[str, object], *, output_digest: bytes | None) -> Hint:
    """What a hint written with the same ``where`` and this output.csv holds; else InvalidHint."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InvalidHint(f"not JSON: {e}") from None
    meta = doc.get("meta") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InvalidHint(f"not format {FORMAT}")
    if differs := [name for name, value in where.items() if meta.get(name) != value]:
        raise InvalidHint(f"written for another {', '.join(differs)}")
    if output_digest is None or meta.get("output") != output_digest.hex():
        raise InvalidHint("written with another output.csv")
    return _contents(doc)


def _contents(doc: dict[str, Any]) -> Hint:
    flat, rejected = doc.get("entries"), doc.get("rejected")
    if not isinstance(flat, list) or len(flat) % 2 or not isinstance(rejected, dict):
        raise InvalidHint("no entries")
    keys, versions = flat[0::2], flat[1::2]
    if not all(type(key) is str for key in keys) or not all(type(r) is str for r in rejected.values()):
        raise InvalidHint("bad entries")
    # A version of the wrong shape is no harm (it equals no listed one: that object is read
    # again), so versions are only made what the store gives: tuples where JSON has lists.
    # One of a single string (a placeholder: stores.PRESENT) is one object for all.
    shared: dict[Version, Version] = {PRESENT: PRESENT}
    try:
        for i, version in enumerate(versions):
            if type(version) is list:
                version = tuple(version)
                versions[i] = shared.setdefault(version, version) if len(version) == 1 else version
    except TypeError:  # a list within: unhashable
        raise InvalidHint("bad version") from None
    return Hint(keys, versions, rejected)
