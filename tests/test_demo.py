"""Tests of the deterministic demo-data generator."""

from __future__ import annotations

import csv
import datetime as dt
import io
import struct
import zlib
from pathlib import Path

import pytest

from userdata.demo import generate_demo, make_png, write_demo

MIN_MS = int(dt.datetime(1940, 1, 1, tzinfo=dt.UTC).timestamp()) * 1000
MAX_MS = int(dt.datetime(2011, 1, 1, tzinfo=dt.UTC).timestamp()) * 1000 - 1


def read_png(data: bytes) -> tuple[int, int, int, bytes]:
    """Check signature and every chunk CRC; return (width, height, colour type, raw pixels)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds, idat, ihdr = 8, [], b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert len(body) == length and crc == zlib.crc32(kind + body), kind
        kinds.append(kind)
        ihdr = body if kind == b"IHDR" else ihdr
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    assert pos == len(data) and kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", ihdr)
    assert depth == 8
    return width, height, colour, zlib.decompress(idat)


def read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), skipinitialspace=True))


@pytest.mark.parametrize(("width", "height"), [(16, 16), (1, 1), (7, 3)])
def test_make_png_is_a_valid_rgb_png_of_the_requested_size(width: int, height: int) -> None:
    w, h, colour, raw = read_png(make_png(width, height, (10, 200, 30)))
    assert (w, h, colour) == (width, height, 2)
    assert len(raw) == height * (1 + 3 * width)


def test_make_png_is_not_a_flat_colour() -> None:
    _, _, _, raw = read_png(make_png(16, 16, (10, 200, 30)))
    pixels = {raw[i : i + 3] for y in range(16) for i in range(y * 49 + 1, (y + 1) * 49, 3)}
    assert b"\x0a\xc8\x1e" in pixels and len(pixels) >= 2


def test_same_seed_gives_identical_output() -> None:
    assert generate_demo(200, seed=7) == generate_demo(200, seed=7)


def test_different_seeds_give_different_output() -> None:
    assert generate_demo(200, seed=1) != generate_demo(200, seed=2)


def test_user_ids_run_from_1000_and_every_user_has_a_csv() -> None:
    files = generate_demo(250)
    ids = {name.split(".")[0] for name in files}
    assert ids == {str(1000 + i) for i in range(250)}
    assert all(f"{uid}.csv" in files for uid in ids)
    assert all(name.endswith((".csv", ".png")) for name in files)


def test_every_csv_has_the_header_and_one_row_with_birthts_in_range() -> None:
    births = []
    for name, data in generate_demo(1000, seed=3).items():
        if not name.endswith(".csv"):
            continue
        assert data.startswith(b"first_name, last_name, birthts\n") and data.endswith(b"\n")
        header, *rows = read_csv(data)
        assert header == ["first_name", "last_name", "birthts"]
        assert len(rows) == 1 and len(rows[0]) == 3 and all(rows[0]), rows
        births.append(int(rows[0][2]))
        assert MIN_MS <= births[-1] <= MAX_MS
    assert min(births) < 0 < max(births)


def test_every_png_is_valid() -> None:
    pngs = [data for name, data in generate_demo(300).items() if name.endswith(".png")]
    assert pngs
    for data in pngs:
        width, height, colour, raw = read_png(data)
        assert colour == 2 and len(raw) == height * (1 + 3 * width)
    assert len(set(pngs)) > 1


def test_about_two_thirds_of_users_get_a_png() -> None:
    files = generate_demo(3000, seed=11)
    share = sum(name.endswith(".png") for name in files) / 3000
    assert 0.6 <= share <= 0.73


def test_write_demo_writes_exactly_the_generated_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert write_demo(target, users=50, seed=5) == 50
    expected = generate_demo(50, seed=5)
    assert {p.name for p in target.iterdir()} == set(expected)
    assert all((target / name).read_bytes() == data for name, data in expected.items())


def test_write_demo_works_on_an_existing_directory_and_leaves_no_temp_files(tmp_path: Path) -> None:
    write_demo(tmp_path, users=20, seed=1)
    assert write_demo(tmp_path, users=20, seed=2) == 20
    expected = generate_demo(20, seed=2)
    names = {p.name for p in tmp_path.iterdir()}
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]
    assert all((tmp_path / name).read_bytes() == data for name, data in expected.items())
