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

The object is JSON, the entries flat, the reasons apart (they are few), the meta last so that
it is written once output.csv's digest is known:
``{"entries": [...], "rejected": {key: reason}, "meta": {...}}``. The entries are each CSV's
key and its version in two numbers, and the key of each image but the one the user's row of
output.csv names (its ``img_path``: a restart takes it from there). A version is an int (see
:mod:`userdata.stores`) of at most 128 bits, written as two JSON numbers of 64 (JSON's parsers
stop there); any other is written as itself and a null. So reading the hint back makes nothing
that is thrown away at once beyond two ints per CSV, whose memory the next version takes
again, and no string the restored records or the catalog do not keep.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..catalog import Catalog, Hint, each_key
from ..records import FUTURE_BIRTHTS
from ..stores import PRESENT, Version

__all__ = ("FORMAT", "HEAD", "InvalidHint", "decode", "encode_entries", "encode_tail", "entries", "hint_key")

#: Bumped whenever the file's meaning changes: a hint of another format is not read.
FORMAT = 2

HEAD = b'{"entries":['
_LOW = (1 << 64) - 1
_MAX_VERSION = (1 << 128) - 1


class InvalidHint(ValueError):
    """The hint cannot be used: the service reads everything instead."""


def hint_key(output_key: str) -> str:
    """Where the hint of ``output_key`` lives: beside it, named after it."""
    return output_key + ".catalog.json"


def entries(catalog: Catalog, user_ids: Iterable[str], rejected: dict[str, str]) -> list[Any]:
    """The entries of these users' CSVs and images, as the catalog holds them now; the reasons
    of those rejected put in ``rejected``."""
    versions, reasons, csv_keys, png_keys = catalog.versions, catalog.rejected, catalog.csv_keys, catalog.png_keys
    current = catalog.current
    out: list[Any] = []
    for user_id in user_ids:
        for key in each_key(csv_keys.get(user_id)):
            version = versions.get(key)
            reason = reasons.get(key)
            if reason is not None:
                rejected[key] = reason
                if reason.startswith(FUTURE_BIRTHTS):
                    version = None
            if type(version) is int and 0 <= version <= _MAX_VERSION:
                out += (key, version >> 64, version & _LOW)
            else:  # unread (None), or not an int: as itself where JSON can hold it
                out += (key, version if type(version) is str else None, None)
        pngs = png_keys.get(user_id)
        if pngs is not None:
            record = current(user_id)
            shown = None if record is None else record.img_path
            out += [key for key in each_key(pngs) if key != shown]
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
    if not isinstance(flat, list) or not isinstance(rejected, dict):
        raise InvalidHint("no entries")
    if not all(type(r) is str for r in rejected.values()):
        raise InvalidHint("bad reasons")
    keys: list[str] = []
    versions: list[Version | None] = []
    i, end = 0, len(flat)
    try:
        while i < end:
            key = flat[i]
            if type(key) is not str:
                raise InvalidHint("bad entries")
            if key[-4:].lower() != ".csv":  # an image: present
                version: Version | None = PRESENT
                i += 1
            else:
                high, low = flat[i + 1], flat[i + 2]
                # Dropped from the list as read: the next version is made in their memory.
                flat[i + 1] = flat[i + 2] = None
                if type(high) is int and type(low) is int:
                    version = high << 64 | low
                elif low is None and (high is None or type(high) is str):
                    version = high
                else:
                    raise InvalidHint("bad version")
                i += 3
            keys.append(key)
            versions.append(version)
    except IndexError:
        raise InvalidHint("entries cut short") from None
    return Hint(keys, versions, rejected)
