"""/data's formats and encodings: CSV in output.csv's shape, gzip, one body for identical answers."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import Service, fast_settings, wait_until

from userdata.cache import Answer
from userdata.keys import ANSWER_CACHE

#: More users than one part of a large answer (bodies.PART), so whole answers come in parts.
USERS = 2500


@pytest.fixture
async def users(start_service, data_dir: Path, source_dir: Path) -> Service:
    """USERS users born over 1940-2010, two thirds with an image, some names needing quotes."""
    source_dir.mkdir(parents=True, exist_ok=True)
    for i in range(USERS):
        birthts = -946_771_200_000 + i * 880_000_000  # 1940-01-01 onwards, about 10 days apart
        first = '"Anne, Marie"' if i % 7 == 0 else f"U{i}"
        (source_dir / f"{i}.csv").write_text(f"first_name, last_name, birthts\n{first}, L, {birthts}\n")
        if i % 3:
            (source_dir / f"{i}.png").write_bytes(b"png")
    service: Service = await start_service(fast_settings(data_dir, watch=False))
    return service


@pytest.fixture
async def raw(users: Service) -> Any:
    """GET on the service without decoding: (status, headers, body as sent)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def get(path: str, **headers: str) -> tuple[int, Any, bytes]:
            headers.setdefault("Accept-Encoding", "identity")
            async with session.get(users.client.make_url(path), headers=headers) as r:
                return r.status, r.headers, await r.read()

        yield get


async def _written(service: Service, output_path: Path) -> bytes:
    """output.csv once it holds every user of the index."""
    expected = len(service.index) + 1

    def whole() -> bool:
        return output_path.exists() and output_path.read_bytes().count(b"\n") == expected

    await wait_until(whole, message="for output.csv to hold every user")
    return output_path.read_bytes()


@pytest.mark.parametrize("query", ["", "is_image_exists=true", "min_age=30&max_age=40", "min_age=200"])
async def test_the_csv_answer_is_output_csv_for_the_same_selection(users: Service, raw, output_path, query: str):
    output = (await _written(users, output_path)).decode().splitlines(keepends=True)
    ids = set(await users.user_ids(f"?{query}"))
    expected = "".join([output[0]] + [line for line in output[1:] if line.split(",", 1)[0] in ids])
    for path, headers in [(f"/data?{query}&format=csv", {}), (f"/data?{query}", {"Accept": "text/csv"})]:
        status, got_headers, body = await raw(path, **headers)
        assert status == 200 and got_headers["Content-Type"] == "text/csv; charset=utf-8", (path, got_headers)
        assert body.decode() == expected, path
    if not query:  # unfiltered, it is output.csv itself
        assert expected == "".join(output)


async def test_csv_pages_each_carry_the_header_and_together_give_the_whole_answer(users: Service, raw):
    _, _, whole = await raw("/data?format=csv")
    header, rows, url = b"", b"", "/data?format=csv&limit=700"
    while url:
        status, headers, body = await raw(url)
        assert status == 200
        header, _, page_rows = body.partition(b"\n")
        rows += page_rows
        link = headers.get("Link")
        url = link[1 : link.index(">")] if link else ""
        assert not link or "format=csv" in url
    assert header + b"\n" + rows == whole


@pytest.mark.parametrize(
    ("accept", "csv"),
    [("text/csv", True), ("text/*", True), ("text/csv, application/json;q=0.5", True),
     ("application/json", False), ("*/*", False), ("", False), ("text/html", False),
     ("application/json, text/csv", False), ("text/csv;q=0.4, application/json;q=0.8", False),
     ("text/csv;q=0", False), ("TEXT/CSV", True)],
)  # fmt: skip
async def test_accept_chooses_the_format_and_json_is_the_default(users: Service, raw, accept: str, csv: bool):
    status, headers, body = await raw("/data?min_age=70", Accept=accept)
    assert status == 200
    assert headers["Content-Type"] == ("text/csv; charset=utf-8" if csv else "application/json"), accept
    assert body.startswith(b"user_id," if csv else b"[")
    assert "Accept" in headers["Vary"]


async def test_the_format_parameter_wins_over_accept_and_a_bad_one_is_400(users: Service, raw):
    status, headers, _ = await raw("/data?format=json", Accept="text/csv")
    assert status == 200 and headers["Content-Type"] == "application/json"
    status, headers, _ = await raw("/data?format=CSV")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    for query in ["format=xml", "format=", "format=csv&format=json"]:
        status, _, body = await raw(f"/data?{query}")
        assert status == 400 and b"format" in body, (query, body)


@pytest.mark.parametrize(
    "query",
    ["", "format=csv", "limit=1000", "limit=1000&format=csv", "is_image_exists=false", "min_age=80"],
)
async def test_compressed_and_plain_answers_decode_equal(users: Service, raw, query: str):
    _, plain_headers, plain = await raw(f"/data?{query}")
    status, headers, sent = await raw(f"/data?{query}", **{"Accept-Encoding": "gzip, deflate"})
    assert status == 200 and "Content-Encoding" not in plain_headers
    assert headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in headers["Vary"]
    assert int(headers["Content-Length"]) == len(sent) < len(plain) / 3
    assert gzip.decompress(sent) == plain
    assert headers["Content-Type"] == plain_headers["Content-Type"]
    _, again_headers, again = await raw(f"/data?{query}", **{"Accept-Encoding": "gzip"})  # kept: the same body
    assert again == sent and again_headers["Content-Encoding"] == "gzip"


@pytest.mark.parametrize("encoding", ["gzip;q=0", "br", "identity", "*;q=0"])
async def test_no_compression_unless_gzip_is_accepted(users: Service, raw, encoding: str):
    _, headers, body = await raw("/data", **{"Accept-Encoding": encoding})
    assert "Content-Encoding" not in headers and body.startswith(b"[")


async def test_a_small_answer_goes_uncompressed(users: Service, raw):
    _, headers, body = await raw("/data?min_age=200", **{"Accept-Encoding": "gzip"})
    assert body == b"[]" and "Content-Encoding" not in headers


def _calls(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> list[tuple[Any, ...]]:
    """The arguments of every call of ``target.name`` from now on (it still does its work)."""
    calls: list[tuple[Any, ...]] = []
    method = getattr(target, name)

    def counted(*args: Any) -> Any:
        calls.append(args)
        return method(*args)

    monkeypatch.setattr(target, name, counted)
    return calls


async def test_identical_concurrent_answers_share_one_build(users: Service, raw, monkeypatch):
    selections = _calls(monkeypatch, users.index, "select")
    answers = await asyncio.gather(*(raw("/data", **{"Accept-Encoding": "gzip"}) for _ in range(8)))
    assert len({body for _, _, body in answers}) == 1 and len(selections) == 1
    # Another encoding or format is another body, built once too.
    await asyncio.gather(*(raw("/data") for _ in range(4)), *(raw("/data?format=csv") for _ in range(4)))
    assert len(selections) == 3


async def test_a_repeated_page_is_built_once_and_follows_every_change(users: Service, source_dir: Path, monkeypatch):
    pages = _calls(monkeypatch, users.index, "page")
    first = [await users.client.get("/data?limit=3&after=1") for _ in range(3)]
    assert len(pages) == 1 and {r.headers["Link"] for r in first} == {'</data?limit=3&after=1000>; rel="next"'}
    assert [u["user_id"] for u in await first[0].json()] == ["10", "100", "1000"]
    (source_dir / "1000.csv").unlink()
    (source_dir / "1000.png").unlink()
    (source_dir / "10000.csv").write_text("first_name, last_name, birthts\nNew, L, 0\n")
    await users.post("/data")
    assert [u["user_id"] for u in await users.get("/data?limit=3&after=1")] == ["10", "100", "10000"]
    assert len(pages) == 2


async def test_a_request_exactly_like_a_recent_one_gets_its_answer_whole_and_no_other_does(users: Service, raw):
    kept = users.app[ANSWER_CACHE]
    shown = ("Content-Type", "Vary", "Link", "Content-Encoding")
    first = await raw("/data?limit=3&after=1")
    again = await raw("/data?limit=3&after=1")
    assert first[0] == again[0] == 200 and first[2] == again[2] and len(kept) == 1
    assert [first[1].get(h) for h in shown] == [again[1].get(h) for h in shown]
    assert first[1]["Link"] == '</data?limit=3&after=1000>; rel="next"'
    # Another Accept, Accept-Encoding or query is another answer (each kept on its own).
    as_csv = await raw("/data?limit=3&after=1", Accept="text/csv")
    assert as_csv[1]["Content-Type"].startswith("text/csv") and as_csv[2].startswith(b"user_id,")
    compressed = await raw("/data?limit=500", **{"Accept-Encoding": "gzip"})
    plain = await raw("/data?limit=500")
    assert compressed[1]["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain[1]
    assert gzip.decompress(compressed[2]) == plain[2] and len(kept) == 4
    # Refused requests are never kept: asked again, they are checked again.
    for _ in range(2):
        assert (await raw("/data?limit=0"))[0] == 400
    assert len(kept) == 4


async def test_a_kept_answer_is_given_as_kept_and_escapes_tell_requests_apart(users: Service, raw):
    # A planted answer under the key a request makes comes back as it is: the request is not
    # parsed again (hence a key must keep apart whatever is sent differently).
    kept = users.app[ANSWER_CACHE]
    assert (await raw("/data?limit=2"))[0] == 200
    ((key, answer),) = kept._bodies.items()
    kept.put(users.index.version, key, Answer(b'["planted"]', answer.headers))
    assert (await raw("/data?limit=2"))[2] == b'["planted"]'
    # "%2B5" is "+5", a number; "%252B5" is "%2B5", not one: never the same key.
    for path in ("/data", "/stats"):
        assert (await raw(f"{path}?min_age=%2B5"))[0] == 200, path
        assert (await raw(f"{path}?min_age=%252B5"))[0] == 400, path
