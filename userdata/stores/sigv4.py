"""AWS Signature Version 4 for S3 requests, with the day's signing key kept.

botocore's signer derives the signing key (four HMACs) and builds its canonical request through
general machinery on every request; here the key is derived once a day per credentials, and a
request costs two hashes and one HMAC. ``tests/test_sigv4.py`` holds the headers equal, byte for
byte, to botocore's ``S3SigV4Auth`` for the same request, time and credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import NamedTuple
from urllib.parse import quote

__all__ = ("EMPTY_SHA256", "Credentials", "Signer", "canonical_query", "quote_key")

#: sha256 of no bytes: the payload hash of GET, HEAD and listing requests.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Credentials(NamedTuple):
    """An access key, its secret, and the session token of temporary credentials (or None)."""

    access_key: str
    secret_key: str
    token: str | None = None


def quote_key(key: str) -> str:
    """An object key as it stands in a request's path (and its canonical URI): ``/`` kept."""
    return quote(key, safe="/~")


def canonical_query(params: dict[str, str]) -> str:
    """The query string, sorted and encoded as SigV4 signs it (and as it is sent)."""
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))


class Signer:
    """Signs requests to one S3 endpoint for one region.

    :param credentials: what to sign with
    :param region: the region in the credential scope (``us-east-1`` for MinIO and SeaweedFS)
    :param host: the ``Host`` header the requests are sent with (``127.0.0.1:9000``)
    """

    def __init__(self, credentials: Credentials, region: str, host: str) -> None:
        self.credentials = credentials
        self.region = region
        self.host = host
        #: the UTC day (YYYYMMDD) the signing key is for, and the key
        self.day = ""
        self.key = b""

    def headers(
        self, method: str, path: str, query: str = "", payload_sha256: str = EMPTY_SHA256, now: float | None = None
    ) -> dict[str, str]:
        """The headers that sign a request: Authorization, X-Amz-Date, X-Amz-Content-SHA256 (and
        X-Amz-Security-Token for temporary credentials).

        ``path`` and ``query`` as they are sent: encoded (:func:`quote_key`, :func:`canonical_query`).
        """
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        day = stamp[:8]
        if day != self.day:
            self.key = self._signing_key(day)
            self.day = day
        token = self.credentials.token
        if token is None:
            names = "host;x-amz-content-sha256;x-amz-date"
            canonical_headers = f"host:{self.host}\nx-amz-content-sha256:{payload_sha256}\nx-amz-date:{stamp}\n"
        else:
            names = "host;x-amz-content-sha256;x-amz-date;x-amz-security-token"
            canonical_headers = (
                f"host:{self.host}\nx-amz-content-sha256:{payload_sha256}\nx-amz-date:{stamp}\n"
                f"x-amz-security-token:{token}\n"
            )
        request = f"{method}\n{path}\n{query}\n{canonical_headers}\n{names}\n{payload_sha256}"
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self.key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers = {
            "X-Amz-Date": stamp,
            "X-Amz-Content-SHA256": payload_sha256,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={self.credentials.access_key}/{scope}, "
                f"SignedHeaders={names}, Signature={signature}"
            ),
        }
        if token is not None:
            headers["X-Amz-Security-Token"] = token
        return headers

    def use(self, credentials: Credentials) -> None:
        """Sign with ``credentials`` from now on (refreshed temporary ones, say)."""
        if credentials != self.credentials:
            self.credentials = credentials
            self.day = ""

    def _signing_key(self, day: str) -> bytes:
        key = f"AWS4{self.credentials.secret_key}".encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key
