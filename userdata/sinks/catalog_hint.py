"""The catalog's hint: each source key's version and rejection, kept beside output.csv.

Written with output.csv, from the same slices of users (see
:meth:`~userdata.sinks.output_csv.OutputWriter`), so each user's keys and versions in it are
those the user's row of output.csv was rendered with. A restart that finds both, and finds them
a pair, lists the store and reads only the objects whose versions differ from the hint's (see
:meth:`~userdata.reconcile.Reconciler.resume`).

It is only ever a hint: it names the digest of the output.csv it was written with, the bucket
and the prefix, and any doubt (missing, unreadable, another format, another output.csv, bucket
or prefix) means a full read. A version the store would never list (an object that could not
be read) is written as null, and so is that of a file rejected for a birthts in the future,
which time alone may make valid: the next start reads both again.

The object is JSON: ``{"entries": [[key, version], [key, version, reason], ...], "meta": {...}}``,
the meta last so that it is written once output.csv's digest is known.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..catalog import UNREAD, Catalog, Entry, each_key
from ..records import FUTURE_BIRTHTS
from ..stores import Version

__all__ = ("FORMAT", "HEAD", "InvalidHint", "decode", "encode_entries", "encode_tail", "entries", "hint_key")

#: Bumped whenever the file's meaning changes: a hint of another format is not read.
FORMAT = 1
HEAD = b'{"entries":['


class InvalidHint(ValueError):
    """The hint cannot be used: the service reads everything instead."""


def hint_key(output_key: str) -> str:
    """Where the hint of ``output_key`` lives: beside it, named after it."""
    return output_key + ".catalog.json"


def entries(catalog: Catalog, user_ids: Iterable[str]) -> list[list[Any]]:
    """The entries of these users' CSVs and images, as the catalog holds them now."""
    versions, rejected, csv_keys, png_keys = catalog.versions, catalog.rejected, catalog.csv_keys, catalog.png_keys
    out: list[list[Any]] = []
    for user_id in user_ids:
        for key in each_key(csv_keys.get(user_id)):
            version = versions.get(key)
            reason = rejected.get(key)
            if version == UNREAD or (reason is not None and reason.startswith(FUTURE_BIRTHTS)):
                version = None
            out.append([key, version] if reason is None else [key, version, reason])
        out.extend([key, versions.get(key)] for key in each_key(png_keys.get(user_id)))
    return out


def encode_entries(batch: list[list[Any]], *, first: bool) -> bytes:
    """``batch`` as the next part of the entries array (a comma first unless ``first``)."""
    if not batch:
        return b""
    body = orjson.dumps(batch)[1:-1]
    return body if first else b"," + body


def encode_tail(*, bucket: str, prefix: str, output_digest: bytes) -> bytes:
    """The end of the object: the meta a restart checks before it trusts the entries."""
    meta = {"format": FORMAT, "bucket": bucket, "prefix": prefix, "output": output_digest.hex()}
    return b'],"meta":' + orjson.dumps(meta) + b"}"


def decode(data: bytes, *, bucket: str, prefix: str, output_digest: bytes | None) -> list[Entry]:
    """The entries of a hint written for this bucket, prefix and output.csv; else InvalidHint."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InvalidHint(f"not JSON: {e}") from None
    meta = doc.get("meta") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InvalidHint(f"not format {FORMAT}")
    if (meta.get("bucket"), meta.get("prefix")) != (bucket, prefix):
        raise InvalidHint(f"written for bucket {meta.get('bucket')!r}, prefix {meta.get('prefix')!r}")
    if output_digest is None or meta.get("output") != output_digest.hex():
        raise InvalidHint("written with another output.csv")
    raw = doc.get("entries")
    if not isinstance(raw, list):
        raise InvalidHint("no entries")
    out: list[Entry] = []
    for entry in raw:
        if not (isinstance(entry, list) and 2 <= len(entry) <= 3 and isinstance(entry[0], str)):
            raise InvalidHint(f"bad entry {entry!r:.80}")
        key, version = entry[0], _version(entry[1])
        if len(entry) == 2:
            out.append((key, version))
        elif isinstance(entry[2], str):
            out.append((key, version, entry[2]))
        else:
            raise InvalidHint(f"bad entry {entry!r:.80}")
    return out


def _version(value: object) -> Version | None:
    """A version as the store gives it: JSON has lists where the store has tuples."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return tuple(value)
    raise InvalidHint(f"bad version {value!r:.80}")
