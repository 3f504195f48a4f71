"""The bodies of /data answers: JSON or CSV (output.csv's shape), whole or in parts, and gzip.

A large answer is rendered and compressed a slice of records at a time, other requests served
between the slices, so building it never holds up the event loop for long.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Coroutine
from typing import Any, Literal

import orjson
from multidict import MultiMapping

from .cache import Body
from .middleware import BadRequest
from .records import UserRecord
from .sinks.snapshot import HEADER, encode, rows_of

__all__ = ("Format", "build", "content_type", "gzip_bytes", "is_gzip", "negotiate", "render_page")

Format = Literal["json", "csv"]

#: Records per part of a large answer: each part is rendered (and compressed) between requests.
PART = 1000
#: Bytes below which an answer goes uncompressed: gzip's own framing would outweigh the gain.
MIN_GZIP = 1024
#: zlib's level: nearly the speed of the fastest, and most of the gain of the default.
GZIP_LEVEL = 3
_GZIP_MAGIC = b"\x1f\x8b"
_CSV_HEADER = encode([HEADER])


def negotiate(fmt: str | None, headers: MultiMapping[str]) -> tuple[Format, bool]:
    """The answer's format and whether to gzip it. The format is ``fmt`` (the ``format``
    parameter) if given, else the one of ``Accept`` the client prefers: JSON unless it prefers
    CSV, JSON being the API's own."""
    gzip = _quality(headers.get("Accept-Encoding", ""), "gzip") > 0
    if fmt is not None:
        if fmt.lower() not in ("json", "csv"):
            raise BadRequest(f"format must be json or csv, not {fmt[:40]!r}")
        return ("csv" if fmt.lower() == "csv" else "json"), gzip
    accept = headers.get("Accept", "").lower()
    if "text/" not in accept:
        return "json", gzip
    return ("csv" if _quality(accept, "text/csv") > _quality(accept, "application/json") else "json"), gzip


def _quality(header: str, wanted: str) -> float:
    """The q ``header`` (Accept or Accept-Encoding) gives ``wanted``: that of its most specific
    matching item (``type/sub``, then ``type/*``, then ``*/*`` or ``*``), 0 if none matches."""
    kind = wanted.partition("/")[0]
    ranks = {wanted: 3, f"{kind}/*": 2, "*/*": 1, "*": 1}
    best, quality = 0, 0.0
    for item in header.split(","):
        name, *params = item.split(";")
        rank = ranks.get(name.strip().lower(), 0)
        if rank > best:
            best, quality = rank, 1.0
            for param in params:
                key, _, value = param.partition("=")
                if key.strip().lower() == "q":
                    try:
                        quality = min(max(float(value), 0.0), 1.0)
                    except ValueError:
                        quality = 0.0
    return quality


def content_type(fmt: Format) -> str:
    return "text/csv; charset=utf-8" if fmt == "csv" else "application/json"


def build(records: list[UserRecord], fmt: Format, gzip: bool) -> Body | Coroutine[Any, Any, Body]:
    """``records`` as one answer, gzip-compressed if ``gzip`` (and large enough to gain): whole
    if small, else (to await) in parts, rendered and compressed a slice at a time, other
    requests served between them."""
    if len(records) <= PART:
        body = render_page(records, fmt)
        return gzip_bytes(body) if gzip else body
    return _build_parts(records, fmt, gzip)


async def _build_parts(records: list[UserRecord], fmt: Format, gzip: bool) -> Body:
    body = await _parts(records, fmt)
    return await _compress_parts(body) if gzip else body


def render_page(records: list[UserRecord], fmt: Format) -> bytes:
    """``records`` (a page: few) as one answer, whole."""
    return _csv(records, True) if fmt == "csv" else orjson.dumps(_dicts(records))


async def _parts(records: list[UserRecord], fmt: Format) -> tuple[bytes, ...]:
    parts = [_CSV_HEADER if fmt == "csv" else b"["]
    for start in range(0, len(records), PART):
        chunk = records[start : start + PART]
        if fmt == "csv":
            parts.append(_csv(chunk, False))
        else:
            part = orjson.dumps(_dicts(chunk))
            parts.append(part[1:-1] if start == 0 else b"," + part[1:-1])
        await asyncio.sleep(0)
    if fmt == "json":
        parts.append(b"]")
    return tuple(parts)


def _csv(records: list[UserRecord], header: bool) -> bytes:
    rows = encode(rows_of(records))
    return _CSV_HEADER + rows if header else rows


def _dicts(records: list[UserRecord]) -> list[dict[str, object]]:
    # Plain dicts: orjson writes them several times faster than slotted dataclasses.
    return [
        {"user_id": user_id, "first_name": first_name, "last_name": last_name, "birthts": birthts, "img_path": img_path}
        for user_id, first_name, last_name, birthts, img_path in records
    ]


def is_gzip(body: Body) -> bool:
    """Whether ``body`` came out of :func:`build` or :func:`gzip_bytes` compressed: a gzip member starts with two
    bytes that neither JSON nor CSV text can start with."""
    first = body if isinstance(body, bytes) else body[0]
    return first[:2] == _GZIP_MAGIC


def gzip_bytes(body: bytes) -> bytes:
    """``body`` gzip-compressed, or as it is if too small to gain."""
    if len(body) < MIN_GZIP:
        return body
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip container
    return compressor.compress(body) + compressor.flush()


async def _compress_parts(body: tuple[bytes, ...]) -> Body:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    parts = []
    for part in body:
        out = compressor.compress(part)
        if out:
            parts.append(out)
        await asyncio.sleep(0)
    parts.append(compressor.flush())
    return tuple(parts)
