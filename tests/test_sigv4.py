"""The service's SigV4 signer gives the headers botocore's S3 signer gives, byte for byte."""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib

import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from userdata.stores.sigv4 import EMPTY_SHA256, Credentials, Signer, canonical_query, quote_key

HOST = "127.0.0.1:8333"
NOW = dt.datetime(2026, 12, 1, 10, 30, 5)
SIGNED = ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token")


def _botocore(
    credentials: Credentials, method: str, path: str, query: str, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: NOW)
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers={"Host": HOST})
    signer = botocore_auth.S3SigV4Auth(BotoCredentials(*credentials), "s3", "us-east-1")
    signer.add_auth(request)
    return {name: request.headers[name] for name in SIGNED if name in request.headers}


@pytest.mark.parametrize("token", [None, "a-session/token+="], ids=["keys", "temporary"])
@pytest.mark.parametrize(
    ("method", "key", "params", "body"),
    [
        ("GET", "src-data/1000.csv", {}, b""),
        ("GET", "src-data/a b+c~d(é).CSV", {}, b""),
        ("HEAD", "src-data/x%y&z.png", {}, b""),
        ("PUT", "processed_data/output.csv", {}, b"user_id,first_name\n1,Ann\n"),
        (
            "GET",
            None,
            {"list-type": "2", "prefix": "src-data/", "delimiter": "/", "continuation-token": "ab+c/d=="},
            b"",
        ),
    ],
)
def test_headers_equal_botocores(monkeypatch, token, method, key, params, body) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    path = "/datalake" + ("" if key is None else "/" + quote_key(key))
    query = canonical_query(params)
    payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    ours = Signer(credentials, "us-east-1", HOST).headers(
        method, path, query, payload, now=calendar.timegm(NOW.timetuple())
    )
    assert ours == _botocore(credentials, method, path, query, body, monkeypatch)


def test_the_signing_key_is_derived_once_a_day_and_again_for_new_credentials() -> None:
    signer = Signer(Credentials("a", "b"), "us-east-1", HOST)
    day = calendar.timegm(NOW.timetuple())
    first = signer.headers("GET", "/b/k", now=day)["Authorization"]
    key = signer.key
    assert signer.headers("GET", "/b/k", now=day + 60)["Authorization"] != first  # another second
    assert signer.key is key, "the same day keeps its key"
    signer.headers("GET", "/b/k", now=day + 86_400)
    assert signer.key != key
    signer.use(Credentials("a", "c"))
    signer.headers("GET", "/b/k", now=day + 86_400)
    assert signer.key not in (key, b"")
