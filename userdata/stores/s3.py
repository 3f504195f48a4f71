"""The S3 store: objects read and written through the S3 API (MinIO, SeaweedFS, AWS).

The hot path is plain aiohttp with the requests signed by the service (:mod:`.s3_http`,
:mod:`.sigv4`, the day's signing key kept): a GET costs about what the server's own answer
does, where botocore's machinery cost several times more. At most ``concurrency`` requests run
at once; an object's own error rejects that object, an error of the store degrades.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import re
from collections.abc import Awaitable, Callable, Collection
from html import unescape
from typing import TypeVar

from ..names import bad_name, rejected_name
from . import (
    ABSENT,
    MAX_OBJECT_SIZE,
    PRESENT,
    Listing,
    ObjectError,
    PreconditionFailed,
    StoreUnavailable,
    Version,
    content_etag,
    etag_version,
    too_large,
)
from .s3_http import Answer, S3Client, TooLarge
from .s3_listing import objects
from .sigv4 import Credentials, quote_key

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
_NEXT = re.compile(r"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_TRUNCATED = re.compile(r"<IsTruncated>\s*true\s*</IsTruncated>")


class S3Store:
    """Objects of one bucket on an S3-compatible server; call :meth:`open` before use.

    :param endpoint: the server's URL (``http://127.0.0.1:9000``)
    :param bucket: the bucket of the source objects and of output.csv
    :param prefix: the source prefix, listed without its sub-folders
    :param concurrency: requests in flight at most, and connections in the pool
    :param connect_timeout: seconds to connect
    :param read_timeout: seconds to wait for each read from the server
    :param max_attempts: tries of one request, with backoff between them
    :param credentials: what to sign with; None: found as the AWS SDKs find them
    :param region: the signing region; None: AWS_DEFAULT_REGION or the profile's, else us-east-1
    :param max_object_size: bytes a source object may have at most (read_many)
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
        credentials: Credentials | None = None,
        region: str | None = None,
        max_object_size: int = MAX_OBJECT_SIZE,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.max_object_size = max_object_size
        self.bucket = bucket
        self.prefix = prefix
        self.concurrency = concurrency
        self._client = S3Client(
            endpoint,
            concurrency=concurrency,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
            credentials=credentials,
            region=region,
        )
        self._requests = asyncio.Semaphore(concurrency)
        #: source-object keys of the last listing that cannot be keys here: escaped key -> why
        self.bad_names: dict[str, str] = {}
        self._bucket_path = "/" + quote_key(bucket)

    def describe(self) -> str:
        return f"s3 {self.endpoint}/{self.bucket}/{self.prefix}"

    async def open(self) -> None:
        """Find the credentials and make the connection pool; no request is made, so an
        unreachable server is no error here."""
        await self._client.open()

    async def remove_leftovers(self, key: str) -> int:
        return 0  # a PUT is whole or nothing

    async def close(self) -> None:
        await self._client.close()

    async def list_objects(self, *, versions: bool = True) -> Listing:
        # ETags come with the names; without versions they are not made into ints a load would
        # only throw away (its reads give every CSV's).
        listing: Listing = {}
        bad: dict[str, str] = {}
        params = {"list-type": "2", "prefix": self.prefix, "delimiter": "/", "encoding-type": "url"}
        while True:
            try:
                async with self._requests:
                    _, body = await self._client.request("GET", self._bucket_path, params)
            except Answer as e:
                raise StoreUnavailable(f"cannot list {self.bucket}/{self.prefix}: {e}") from e
            page = body.decode()
            for key, etag in objects(page):
                if not bad_name(key):
                    listing[key] = etag_version(etag) if versions and key[-4:].lower() != ".png" else PRESENT
                elif (rejected := rejected_name(key)) is not None:  # no key; listed as rejected
                    bad[rejected[0]] = rejected[1]
            token = _NEXT.search(page)
            if not _TRUNCATED.search(page) or token is None:
                self.bad_names = bad
                return listing
            params["continuation-token"] = unescape(token[1])

    async def read_many(
        self, keys: Collection[str], parse: Callable[[bytes], T]
    ) -> dict[str, tuple[Version, T] | ObjectError | None]:
        async def get(key: str) -> tuple[Version, T] | ObjectError | None:
            found = await self._get(key, self.max_object_size)
            if found is None or isinstance(found, ObjectError):
                return found
            etag, data = found
            # A usual CSV is parsed here on the loop, as it arrives; a large body off it.
            parsed = parse(data) if len(data) < _PARSE_ON_LOOP else await asyncio.to_thread(parse, data)
            return etag_version(etag), parsed

        return await self._each(get, keys)

    async def stat_many(self, keys: Collection[str]) -> dict[str, Version | ObjectError | None]:
        async def head(key: str) -> Version | ObjectError | None:
            found = await self._head(key)
            return found if found is None or isinstance(found, ObjectError) else etag_version(found)

        return await self._each(head, keys)

    async def read(self, key: str) -> bytes | None:
        async with self._requests:
            found = await self._get(key)
        if isinstance(found, ObjectError):
            raise found
        return None if found is None else found[1]

    async def write(self, key: str, data: bytes) -> None:
        await self._put(key, data, None)

    async def etag(self, key: str) -> str | None:
        async with self._requests:
            found = await self._head(key)
        if isinstance(found, ObjectError):
            raise found
        return found

    async def write_if(self, key: str, data: bytes, etag: str | None) -> str:
        # The server checks If-Match as it commits the PUT (412 from SeaweedFS 4.48 and MinIO; a
        # test races writers on SeaweedFS): no HEAD before, so no window between check and write.
        try:
            return await self._put(key, data, etag)
        except PreconditionFailed:
            ours = await asyncio.to_thread(content_etag, data)  # what a PUT of these bytes is given
            async with self._requests:  # a PUT tried again, whose first try landed, meets its own
                if await self._head(key) == ours:
                    return ours
            raise

    async def _put(self, key: str, data: bytes, etag: str | None) -> str:
        digest = _sha256(data) if len(data) < 1 << 20 else await asyncio.to_thread(_sha256, data)
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        condition = None if etag is None else {"If-None-Match": "*"} if etag == ABSENT else {"If-Match": etag}
        try:
            # In turn with reads, as every request: one outside the bound would wait for a free
            # connection behind a scan's reads, which take each one back as it comes.
            async with self._requests:
                headers, _ = await self._client.request(
                    "PUT", self._path(key), body=data, payload_sha256=digest, content_type=content_type,
                    extra_headers=condition,
                )  # fmt: skip
        except Answer as e:
            if etag is not None and (e.status == 412 or e.code == "NoSuchKey"):  # changed, or gone
                raise PreconditionFailed(key, etag) from e
            raise StoreUnavailable(f"cannot write {key}: {e}") from e
        given = headers.get("ETag")  # none: what one PUT would get (an empty one fails every If-Match)
        return given if given else await asyncio.to_thread(content_etag, data)

    async def create_bucket(self) -> None:
        """Create the bucket (demo data and benchmarks only: the service never creates one)."""
        await self._client.request("PUT", self._bucket_path)

    async def _each(self, request: Callable[[str], Awaitable[T]], keys: Collection[str]) -> dict[str, T]:
        """``request(key)`` for every key, by a few workers that take the next key as they finish.

        Not a task per key: a batch of a million keys would hold a million tasks, and a request
        made meanwhile (a change named while a scan reads) would wait behind all of them for a
        slot; with workers it waits for one request at most.
        """
        out: dict[str, T] = {}
        todo = iter(keys)

        async def work() -> None:
            for key in todo:
                async with self._requests:
                    out[key] = await request(key)

        workers = [asyncio.ensure_future(work()) for _ in range(min(self.concurrency, len(keys)))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for worker in workers:  # the store is unavailable: the other requests are wasted
                worker.cancel()
            raise
        return out

    async def _get(self, key: str, limit: int | None = None) -> tuple[str, bytes] | ObjectError | None:
        try:
            headers, body = await self._client.request("GET", self._path(key), limit=limit)
        except Answer as e:
            return _object_error(e, key)
        except TooLarge as e:
            return too_large(e.size, self.max_object_size)
        return headers.get("ETag", ""), body

    async def _head(self, key: str) -> str | ObjectError | None:
        try:
            headers, _ = await self._client.request("HEAD", self._path(key))
        except Answer as e:
            return _object_error(e, key)
        return headers.get("ETag", "")

    def _path(self, key: str) -> str:
        return f"{self._bucket_path}/{quote_key(key)}"


def _object_error(error: Answer, key: str) -> ObjectError | None:
    """None for a missing object; ObjectError when only this object cannot be read.

    Errors of the server, the bucket or the credentials (5xx, NoSuchBucket, a bad key) concern
    every object: they raise StoreUnavailable, so the batch is retried instead of files rejected.
    Any other client error (access denied, an archived or encrypted object) is this object's
    alone: it is rejected with the reason and read again by a later rescan, never holding up others.
    """
    if error.code in _MISSING or (error.status == 404 and error.code != "NoSuchBucket"):
        return None
    if error.code in _STORE_WIDE or not 400 <= error.status < 500:
        raise StoreUnavailable(f"cannot read {key}: {error}") from error
    return ObjectError(str(error))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
