"""The S3 store's transport: aiohttp, each request signed here (:mod:`.sigv4`), tried again on failure.

aiobotocore is used for what it does well and only at the edges: finding the credentials (the
AWS_* variables, a profile, an instance role) and refreshing temporary ones; no botocore client
is made. One connection pool for the client's lifetime; requests have timeouts, and transport
errors, 5xx and throttling are tried again with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from html import unescape
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from ..backoff import Backoff
from . import StoreUnavailable
from .sigv4 import EMPTY_SHA256, Credentials, Signer, canonical_query

__all__ = ("Answer", "S3Client")

logger = logging.getLogger("userdata.stores.s3")

#: Answers worth another try: the server's trouble or its load, not the request's.
_TRY_AGAIN = frozenset({"SlowDown", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable"})
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_CODE = re.compile(r"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


class TooLarge(Exception):
    """A body past the limit a request was made with: ``size`` bytes or more."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class Answer(Exception):
    """An S3 error answer: its status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code} {message}".strip())
        self.status = status
        self.code = code


class S3Client:
    """Signed requests to one S3 endpoint; call :meth:`open` before use.

    The parameters are :class:`~userdata.stores.s3.S3Store`'s of the same names (``concurrency``
    here bounds the connection pool).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        concurrency: int,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
        credentials: Credentials | None,
        region: str | None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)
        self._max_attempts = max(1, max_attempts)
        self._credentials = credentials
        self._region = region
        self._found: Any = None  # botocore's credentials, refreshed as it sees fit
        self._session: aiohttp.ClientSession | None = None
        self._signer: Signer | None = None

    async def open(self) -> None:
        """Find the credentials and make the connection pool; no request is made, so an
        unreachable server is no error here."""
        try:
            await self._find_credentials()
        except StoreUnavailable as e:
            logger.warning("%s; the store is unavailable until there are", e)  # requests look again
        connector = aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        *,
        body: bytes = b"",
        payload_sha256: str = EMPTY_SHA256,
        content_type: str | None = None,
        limit: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[Mapping[str, str], bytes]:
        """(headers, body) of a 2xx answer; raises Answer for another answer, and
        StoreUnavailable when the server cannot be reached, after ``max_attempts`` tries.
        A 2xx body longer than ``limit`` raises TooLarge, read no further than that.
        ``extra_headers`` (``If-Match``, say) are sent unsigned, as SigV4 allows."""
        assert self._session is not None, "open() first"
        if self._signer is None:
            await self._find_credentials()
        assert self._signer is not None
        query = canonical_query(params) if params else ""
        url = URL(f"{self.endpoint}{path}{'?' + query if query else ''}", encoded=True)
        backoff = Backoff((0.05, 0.2, 1.0))
        for attempt in range(1, self._max_attempts + 1):
            if self._found is not None:
                self._signer.use(await self._fresh_credentials())
            headers = self._signer.headers(method, path, query, payload_sha256)
            if content_type is not None:
                headers["Content-Type"] = content_type
            headers.update(extra_headers or {})
            try:
                async with self._session.request(method, url, headers=headers, data=body or None) as response:
                    status = response.status
                    data = await (response.read() if status >= 300 or limit is None else _capped(response, limit))
                    if status < 300:
                        return response.headers, data
                    error = _answer(status, data)
            except _TRANSPORT_ERRORS as e:
                if attempt == self._max_attempts:
                    raise StoreUnavailable(f"{method} {path}: {e or type(e).__name__}") from e
            else:
                if attempt == self._max_attempts or not (status >= 500 or error.code in _TRY_AGAIN):
                    raise error
            await asyncio.sleep(backoff.failed())
        raise AssertionError("unreachable")

    async def _find_credentials(self) -> None:
        """Make the signer, with the credentials given or found as the AWS SDKs find them;
        raises StoreUnavailable while there are none."""
        region = self._region
        if self._credentials is None or region is None:
            from aiobotocore.session import get_session  # the credential chain only: no client

            session = get_session()
            region = region or session.get_config_variable("region") or "us-east-1"
            if self._credentials is None:
                self._found = await session.get_credentials()
        credentials = self._credentials or await self._fresh_credentials()
        self._signer = Signer(credentials, region, urlsplit(self.endpoint).netloc)
        if not hasattr(self._found, "refresh_needed"):
            self._found = None  # not temporary: frozen once for good

    async def _fresh_credentials(self) -> Credentials:
        frozen = await self._found.get_frozen_credentials() if self._found is not None else None
        if frozen is None or not frozen.access_key:
            raise StoreUnavailable("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def _answer(status: int, body: bytes) -> Answer:
    text = body.decode(errors="replace")
    code, message = _CODE.search(text), _MESSAGE.search(text)
    return Answer(status, unescape(code[1]) if code else str(status), unescape(message[1]) if message else "")


async def _capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, unless it is (or says it is) longer than ``limit``: TooLarge then."""
    if response.content_length is not None and response.content_length > limit:
        raise TooLarge(response.content_length)
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:  # a length that lied, or none given
            raise TooLarge(size)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
