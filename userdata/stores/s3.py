"""The S3 store: objects read and written through the S3 API (MinIO, SeaweedFS, AWS) with aiobotocore.

One client for the store's lifetime (its connection pool is reused); requests have timeouts and
retries with backoff. Credentials and region come from the standard AWS_* variables.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Awaitable, Callable, Collection
from contextlib import AsyncExitStack
from functools import partial
from typing import Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from . import Listing, ObjectError, StoreUnavailable, Version

__all__ = ("S3Store",)

T = TypeVar("T")
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
#: Error codes that concern every object: the bucket, the credentials, the server's load.
_STORE_WIDE = frozenset(
    {
        "NoSuchBucket",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AccountProblem",
        "AllAccessDisabled",
        "RequestTimeTooSkewed",
        "SlowDown",
        "Throttling",
    }
)
#: Bodies up to this size are parsed on the event loop as they arrive.
_PARSE_ON_LOOP = 16384
#: What a failed body read raises: not a botocore error, but the connection's.
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError)


class S3Store:
    """Objects of one bucket on an S3-compatible server; call :meth:`open` before use.

    :param endpoint: the server's URL (``http://127.0.0.1:9000``)
    :param bucket: the bucket of the source objects and of output.csv
    :param prefix: the source prefix, listed without its sub-folders
    :param concurrency: requests in flight at most, and connections in the pool
    :param connect_timeout: seconds to connect
    :param read_timeout: seconds to wait for each read from the server
    :param max_attempts: tries of one request (botocore's standard retries, with backoff)
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str,
        *,
        concurrency: int = 32,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
        self._concurrency = concurrency
        self._config = AioConfig(
            max_pool_connections=concurrency,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            s3={"addressing_style": "path"},
            # botocore >= 1.36 sends checksum headers that many S3-compatible servers reject
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._exit_stack = AsyncExitStack()
        self._client: Any = None
        self._requests = asyncio.Semaphore(concurrency)

    def describe(self) -> str:
        return f"s3 {self.endpoint}/{self.bucket}/{self.prefix}"

    async def open(self) -> None:
        """Create the client; no request is made, so an unreachable server is no error here."""
        session = get_session()
        self._client = await self._exit_stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=session.get_config_variable("region") or "us-east-1",
                config=self._config,
            )
        )

    async def close(self) -> None:
        await self._exit_stack.aclose()

    async def list_objects(self, *, versions: bool = True) -> Listing:  # ETags come with the names
        listing: Listing = {}
        paginator = self._client.get_paginator("list_objects_v2")
        # The delimiter leaves out sub-folders of the prefix: they hold no source objects.
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
        try:
            async for page in pages:
                for obj in page.get("Contents", []):
                    listing[obj["Key"]] = obj["ETag"]
        except (*_TRANSPORT_ERRORS, ClientError) as e:
            raise StoreUnavailable(_describe(e, f"cannot list {self.bucket}/{self.prefix}")) from e
        return listing

    async def read_many(
        self, keys: Collection[str], parse: Callable[[bytes], T]
    ) -> dict[str, tuple[Version, T] | ObjectError | None]:
        return await self._each(partial(self._get, parse=parse), keys)

    async def stat_many(self, keys: Collection[str]) -> dict[str, Version | ObjectError | None]:
        return await self._each(self._head, keys)

    async def read(self, key: str) -> bytes | None:
        found = await self._get(key, bytes)
        if isinstance(found, ObjectError):
            raise found
        return None if found is None else found[1]

    async def write(self, key: str, data: bytes) -> None:
        try:
            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
            await self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except (*_TRANSPORT_ERRORS, ClientError) as e:
            raise StoreUnavailable(_describe(e, f"cannot write {key}")) from e

    async def _each(self, request: Callable[[str], Awaitable[T]], keys: Collection[str]) -> dict[str, T]:
        async def one(key: str) -> T:
            async with self._requests:
                return await request(key)

        tasks = [asyncio.ensure_future(one(key)) for key in keys]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # the store is unavailable: the other requests are wasted
                task.cancel()
            raise
        return dict(zip(keys, results, strict=True))

    async def _get(self, key: str, parse: Callable[[bytes], T]) -> tuple[Version, T] | ObjectError | None:
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=key)
            # Read inside the context so the connection goes back to the pool.
            async with response["Body"] as body:
                data = await body.read()
        except ClientError as e:
            return _object_error(e, key)
        except _TRANSPORT_ERRORS as e:
            raise StoreUnavailable(_describe(e, f"cannot read {key}")) from e
        # A usual CSV is parsed here on the loop, as it arrives; a large body off it.
        parsed = parse(data) if len(data) < _PARSE_ON_LOOP else await asyncio.to_thread(parse, data)
        return response["ETag"], parsed

    async def _head(self, key: str) -> Version | ObjectError | None:
        try:
            response = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            return _object_error(e, key)
        except _TRANSPORT_ERRORS as e:
            raise StoreUnavailable(_describe(e, f"cannot read {key}")) from e
        return response["ETag"]  # type: ignore[no-any-return]


def _object_error(error: ClientError, key: str) -> ObjectError | None:
    """None for a missing object; ObjectError when only this object cannot be read.

    Errors of the server, the bucket or the credentials (5xx, NoSuchBucket, a bad key) concern
    every object: they raise StoreUnavailable, so the batch is retried instead of files rejected.
    Any other client error (access denied, an archived or encrypted object) is this object's
    alone: it is rejected with the reason and read again by a later rescan, never holding up others.
    """
    err = error.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in _MISSING:
        return None
    if code in _STORE_WIDE or not 400 <= status < 500:
        raise StoreUnavailable(_describe(error, f"cannot read {key}")) from error
    return ObjectError(f"{code} {err.get('Message', '')}".strip())


def _describe(error: Exception, doing: str) -> str:
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        return f"{doing}: {err.get('Code', '?')} {err.get('Message', '')}".strip()
    return f"{doing}: {error}"
