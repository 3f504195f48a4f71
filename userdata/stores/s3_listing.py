"""The S3 store's listing pages (ListObjectsV2's XML): each object's key and ETag, by regex.

Apart from :mod:`.s3` so that the store's requests and the parsing of their pages each stay
small enough to read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from urllib.parse import unquote_plus

__all__ = ("objects",)

_CONTENTS = re.compile(r"<Contents>")
#: Each object's key and ETag in one pass over a page, where the ETag follows the key with only
#: simple elements between (as S3 servers write them; a page where that does not find every
#: object is read object by object). It cannot run into the next object's: </Contents> ends it.
_KEY_ETAG = re.compile(r"<Key>([^<]*)</Key>(?:<[A-Za-z][^>]*>[^<]*</[A-Za-z]+>)*?<ETag>([^<]*)</ETag>")
_EACH = re.compile(r"<Contents>(.*?)</Contents>", re.S)
_KEY = re.compile(r"<Key>([^<]*)</Key>")
_ETAG = re.compile(r"<ETag>([^<]*)</ETag>")
#: Keys of a listing that says so are URL-encoded (asked for: any key is then valid XML).
_URL_ENCODED = re.compile(r"<EncodingType>url</EncodingType>")


def objects(page: str) -> Iterator[tuple[str, str]]:
    """(key, ETag) of each object of a listing page, decoded."""
    pairs: list[tuple[str, str]] = _KEY_ETAG.findall(page)
    if len(pairs) != len(_CONTENTS.findall(page)):
        pairs = [
            (key[1], etag[1])
            for contents in _EACH.findall(page)
            if (key := _KEY.search(contents)) is not None and (etag := _ETAG.search(contents)) is not None
        ]
    decode = _url_decoded if _URL_ENCODED.search(page) else _unescaped
    return ((decode(key), _unescaped(etag)) for key, etag in pairs)


def _url_decoded(text: str) -> str:
    return unquote_plus(text) if "%" in text or "+" in text else text


def _unescaped(text: str) -> str:
    """XML text of an element, its entities replaced (the quotes around ETags, nearly always)."""
    if "&" not in text:
        return text
    text = text.replace("&#34;", '"').replace("&quot;", '"')
    return unescape(text) if "&" in text else text
