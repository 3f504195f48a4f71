"""The OpenAPI description against the app: every route and parameter described, the page for
people, and schemathesis against the live service finding nothing outside the description."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import requests
import schemathesis
from aiohttp import web
from helpers import PNG, SpyStore, fast_settings, wait_until
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

import userdata
from userdata.app import create_app
from userdata.docs import operations, render, resolve
from userdata.keys import PIPELINE, TASKS
from userdata.openapi import DOCUMENT, WHITE_SPACE
from userdata.stores import StoreUnavailable
from userdata.stores.folder import FolderStore

TOKEN = "test-token"
#: Generated cases per operation (schemathesis' fuzzing phase; its other phases add a few).
EXAMPLES = 30


def _resolve(item: dict[str, Any]) -> dict[str, Any]:
    return resolve(DOCUMENT, item)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


class LiveService:
    """The app as a real server on a free loopback port, its event loop in a thread of its own
    (schemathesis' calls block)."""

    def __init__(self, data_dir: Path) -> None:
        self.app = create_app(fast_settings(data_dir, webhook_token=TOKEN, watch=False))
        #: (method, path, status) of every answer, schemathesis' probes included
        self.answers: set[tuple[str, str, int]] = set()
        self.app.on_response_prepare.append(self._record)
        self.runner = web.AppRunner(self.app)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-service", daemon=True)
        self.url = ""

    async def _record(self, request: web.Request, response: web.StreamResponse) -> None:
        self.answers.add((request.method, request.path, response.status))

    def start(self) -> None:
        self.thread.start()

        async def start() -> str:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            await asyncio.wait_for(self.app[PIPELINE].loaded.wait(), 10)
            host, port = self.runner.addresses[0][:2]
            return f"http://{host}:{port}"

        self.url = asyncio.run_coroutine_threadsafe(start(), self.loop).result(15)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    data_dir = tmp_path_factory.mktemp("openapi")
    source = data_dir / "datalake" / "src-data"
    source.mkdir(parents=True)
    for n in range(20):  # enough for pages to link to the next, and for the whole answer to be gzipped
        (source / f"{n:04}.csv").write_text(f"first_name, last_name, birthts\nAnn{n}, Lee, {n * 86_400_000_000}\n")
        if n % 3 == 0:
            (source / f"{n:04}.png").write_bytes(PNG)
    for name, body in [("bad1.csv", b"first_name\nAnn\n"), ("bad2.csv", b"\xff\xfe"), ("bad3.csv", b"")]:
        (source / name).write_bytes(body)  # rejected: listed by /health and /rejected
    service = LiveService(data_dir)
    service.start()
    # output.csv is there before any test asks for it: GET and HEAD /output.csv answer alike.
    output = data_dir / "datalake" / "processed_data" / "output.csv"
    deadline = time.monotonic() + 10
    while not output.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield service
    service.stop()


def test_every_route_is_described_and_nothing_else() -> None:
    app = create_app(fast_settings(Path("unused")))
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    gets = {(m, p) for m, p in routes if m == "GET"}
    # aiohttp answers HEAD for every GET; the description says so once rather than for each.
    assert {(m, p) for m, p in routes if m == "HEAD"} == {("HEAD", p) for _, p in gets}
    described = {(m.upper(), p) for m, p, _ in operations(DOCUMENT)}
    assert described == routes - {("HEAD", p) for _, p in gets}


def test_every_reference_resolves() -> None:
    for ref in _refs(DOCUMENT):
        assert ref.startswith("#/"), ref
        assert _resolve({"$ref": ref}), ref


def test_the_document_is_openapi_3_1() -> None:
    loaded = schemathesis.openapi.from_dict(DOCUMENT)
    loaded.validate()  # against the OpenAPI 3.1 meta-schema (jsonschema-rs); raises if not valid
    assert DOCUMENT["openapi"] == "3.1.0" and loaded.specification.version == "3.1.0"
    assert DOCUMENT["info"]["version"] == userdata.__version__


def test_the_white_space_the_patterns_allow_is_what_the_handlers_trim() -> None:
    pattern = jsonschema_rs.Draft202012Validator({"type": "string", "pattern": f"^[{WHITE_SPACE}]$"})
    plane = [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]  # no lone surrogates
    assert {c for c in plane if pattern.is_valid(c)} == {c for c in plane if c.isspace()}
    assert not any(chr(c).isspace() for c in range(0x10000, sys.maxunicode + 1))


def test_the_description_pulls_in_neither_watchfiles_nor_asyncpg() -> None:
    code = "import sys, userdata.docs; print(sorted({'watchfiles', 'asyncpg'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


#: A value for each path parameter: a user of the live service's, with an image.
PATH_VALUES = {"user_id": "0000"}
#: Paths whose answer never ends (a stream of events): asked for its status and headers only.
ENDLESS = {"/updates"}


def _ask(live: LiveService, method: str, path: str, **options: Any) -> requests.Response:
    """``method`` on ``path`` of the live service, its path parameters filled in."""
    endless = path in ENDLESS and method == "get"
    r = requests.request(method, live.url + path.format(**PATH_VALUES), timeout=5, stream=endless, **options)
    if endless:
        r.close()
    return r


def test_each_operation_names_the_parameters_its_handler_accepts(live: LiveService) -> None:
    for method, path, operation in operations(DOCUMENT):
        if (method, path) == ("post", "/events"):
            continue  # its body is its input; it takes no parameter
        parameters = [_resolve(p) for p in operation.get("parameters", ())]
        assert all(p["in"] in ("query", "path") for p in parameters)
        assert {p["name"] for p in parameters if p["in"] == "path"} == set(re.findall(r"{(\w+)}", path))
        parameters = [p for p in parameters if p["in"] == "query"]
        # The error for an unknown parameter lists those the handler knows: the handler's own word.
        # An operation that takes none ignores it.
        r = _ask(live, method, path, params={"no_such_parameter": "1"})
        known = re.search(r"known: (.*)$", r.json()["error"]) if r.status_code == 400 else None
        accepted = known.group(1).split(", ") if known else []
        assert sorted(p["name"] for p in parameters) == sorted(accepted), (method, path)


def test_every_get_answers_head_too(live: LiveService) -> None:
    for method, path, _ in operations(DOCUMENT):
        if method == "get":
            got, head = (_ask(live, m, path) for m in ("get", "head"))
            assert (head.status_code, head.content) == (got.status_code, b""), path
            assert head.headers["Content-Type"] == got.headers["Content-Type"], path


def test_the_docs_page_names_every_operation_and_fetches_nothing(live: LiveService) -> None:
    r = requests.get(live.url + "/docs", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    page = r.text
    assert page == render(DOCUMENT)
    for method, path, _ in operations(DOCUMENT):
        assert f"<code>{path}</code>" in page, path
        assert f'<section id="{method}-' in page and f">{method.upper()}</span>" in page
    assert set(re.findall(r'href="#([^"]*)"', page)) <= set(re.findall(r'id="([^"]*)"', page))  # anchors
    assert set(re.findall(r'href="([^#"][^"]*)"', page)) == {"openapi.json"}
    assert not re.search(r"https?://", page)
    assert not re.search(r"<(script|link|img|iframe)\b", page, re.IGNORECASE)
    assert not re.search(r"@import|url\(", page)


def test_openapi_json_is_the_document(live: LiveService) -> None:
    r = requests.get(live.url + "/openapi.json", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == DOCUMENT


# The bearer token for the operations that need one; schemathesis' ignored_auth check also sends
# each of them without it and with a wrong one, and expects 401.
SCHEMA = schemathesis.openapi.from_dict(
    DOCUMENT, config=schemathesis.Config.from_dict({"auth": {"openapi": {"webhookToken": {"bearer": TOKEN}}}})
)
#: Operations whose parameters constrain each other (after needs limit, min_age <= max_age), which
#: OpenAPI cannot say of separate parameters: a schema-valid query may get its 400.
RELATED_PARAMETERS = {"GET /data", "GET /stats", "GET /stats/ages"}


# /updates is left out: its answer is an endless stream, which schemathesis would wait for to end
# (tests/test_live.py tests it; it stays in the document, and the tests above ask it too).
@SCHEMA.exclude(path="/updates").parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same cases on every run, none replayed from an earlier one
    database=None,
    deadline=None,
    # conftest's autouse fixture (the environment without USERDATA_*) is the same for every case
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_the_live_service_answers_as_described(case: schemathesis.Case[Any], live: LiveService) -> None:
    excluded: list[schemathesis.CheckFunction] = (
        [positive_data_acceptance] if case.operation.label in RELATED_PARAMETERS else []
    )
    case.call_and_validate(base_url=live.url, excluded_checks=excluded)


def _described(method: str, path: str, status: int) -> jsonschema_rs.Validator:
    """A validator for the JSON body the description gives the answer."""
    answer = _resolve(DOCUMENT["paths"][path][method]["responses"][str(status)])
    schema = answer["content"]["application/json"]["schema"]
    return jsonschema_rs.Draft202012Validator(schema | {"components": DOCUMENT["components"]})


async def test_the_answers_of_a_service_that_cannot_load_are_described(start_service, data_dir: Path) -> None:
    """What the live run cannot reach: the 503s of a store that cannot be read, and of a dead task."""
    store = SpyStore(FolderStore(data_dir, "datalake", "src-data/"))
    store.fail = StoreUnavailable("the store is down")
    service = await start_service(fast_settings(data_dir), store=store, loaded=False)
    await wait_until(lambda: service.pipeline.store_error is not None, message="for the store's error")
    failing = [("get", "/health", 503), ("get", "/readyz", 503), ("post", "/data", 503), ("get", "/output.csv", 503)]
    for method, path, status in failing:
        r = await service.client.request(method, path)
        assert r.status == status and r.content_type == "application/json", path
        _described(method, path, status).validate(await r.json())

    async def crash() -> None:
        raise RuntimeError("a bug")

    died = asyncio.create_task(crash(), name="userdata.output")
    with contextlib.suppress(RuntimeError):
        await died
    service.app[TASKS].append(died)
    r = await service.client.get("/livez")
    assert r.status == 503
    _described("get", "/livez", 503).validate(await r.json())


def test_the_run_reached_the_answers_that_matter(live: LiveService) -> None:
    """The live run above sent what it must: the webhook with and without the token, bad queries."""
    if not any(status == 401 for *_, status in live.answers):
        pytest.skip("the live run did not run in this session")
    for answer in [("POST", "/events", 200), ("POST", "/events", 400), ("POST", "/events", 401)]:
        assert answer in live.answers
    for path in ["/data", "/stats", "/stats/ages", "/rejected"]:
        assert {("GET", path, 200), ("GET", path, 400)} <= live.answers
    assert ("POST", "/data", 200) in live.answers
