"""Deterministic demo data: per-user ``<id>.csv`` files and optional ``<id>.png`` images.

The CSV files use exactly the format of the real data::

    first_name, last_name, birthts
    Susan, Lee, 612302400000

with ``birthts`` the birth time in milliseconds since the epoch (UTC).
"""

from __future__ import annotations

import calendar
import functools
import logging
import os
import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ("FIRST_ID", "MAX_BIRTHTS", "MIN_BIRTHTS", "generate_demo", "iter_demo", "make_png", "write_demo")

log = logging.getLogger("userdata.demo")

#: The id of the first generated user; ids are ``str(FIRST_ID + i)``.
FIRST_ID = 1000
#: 1940-01-01T00:00:00.000Z in milliseconds since the epoch.
MIN_BIRTHTS = calendar.timegm((1940, 1, 1, 0, 0, 0)) * 1000
#: 2010-12-31T23:59:59.999Z in milliseconds since the epoch.
MAX_BIRTHTS = calendar.timegm((2011, 1, 1, 0, 0, 0)) * 1000 - 1
#: Share of users that get an image.
PNG_SHARE = 2 / 3
PNG_SIZE = 16

CSV_HEADER = b"first_name, last_name, birthts\n"

# Plain ASCII, and no commas or quotes: the CSV format has no quoting.
FIRST_NAMES: tuple[str, ...] = (
    "Susan",
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Maria",
    "Joseph",
    "Sarah",
    "Thomas",
    "Karen",
    "Charles",
    "Nancy",
    "Daniel",
    "Lisa",
    "Matthew",
    "Betty",
    "Anthony",
    "Sandra",
    "Mark",
    "Ashley",
    "Paul",
    "Emily",
    "Steven",
    "Donna",
    "Andrew",
    "Michelle",
    "Kenji",
    "Aisha",
    "Mary-Kate",
    "Jean-Luc",
    "Priya",
)
LAST_NAMES: tuple[str, ...] = (
    "Lee",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Tanaka",
    "Patel",
    "O'Brien",
    "Smith-Jones",
    "D'Angelo",
    "Kowalski",
)

#: Fixed colours of the demo images, so at most ``len(PALETTE)`` PNGs are ever encoded.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (0, 0, 128),
)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """Encode a ``width`` x ``height`` 8-bit RGB PNG of a two-colour checkerboard.

    The squares alternate between ``rgb`` and its complement; a square is a quarter of
    the shorter side (at least one pixel).
    """
    if width < 1 or height < 1:
        raise ValueError(f"PNG size must be positive, got {width}x{height}")
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"rgb must be three integers in 0..255, got {rgb!r}")
    light = bytes(rgb)
    dark = bytes(255 - c for c in rgb)
    cell = max(1, min(width, height) // 4)
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter type None
        for x in range(width):
            raw += light if (x // cell + y // cell) % 2 == 0 else dark
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + _chunk(b"IEND", b"")
    )


@functools.cache
def _palette_png(index: int) -> bytes:
    return make_png(PNG_SIZE, PNG_SIZE, PALETTE[index])


def iter_demo(users: int = 100, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """Yield ``(file name, content)`` for each demo user, in user order, lazily.

    Every user gets ``<id>.csv``; about two thirds also get ``<id>.png`` right after it.
    The output depends only on ``(users, seed)``.
    """
    if users < 0:
        raise ValueError(f"users must not be negative, got {users}")
    rng = random.Random(seed)
    for i in range(users):
        uid = str(FIRST_ID + i)
        first = rng.choice(FIRST_NAMES)
        last = rng.choice(LAST_NAMES)
        birthts = rng.randint(MIN_BIRTHTS, MAX_BIRTHTS)
        yield f"{uid}.csv", CSV_HEADER + f"{first}, {last}, {birthts}\n".encode()
        if rng.random() < PNG_SHARE:
            yield f"{uid}.png", _palette_png(rng.randrange(len(PALETTE)))


def generate_demo(users: int = 100, seed: int = 0) -> dict[str, bytes]:
    """Return the demo files of ``users`` users as a mapping of file name to bytes.

    Names carry no directory (``"1000.csv"``, ``"1000.png"``); ids run from 1000 upward.
    The same ``(users, seed)`` always gives byte-identical output.
    """
    return dict(iter_demo(users, seed))


def write_demo(directory: Path, users: int = 100, seed: int = 0) -> int:
    """Write the files of :func:`generate_demo` into ``directory`` and return ``users``.

    ``directory`` (and its parents) is created if needed. Each file is written to a hidden
    ``.<name>.tmp`` in the same directory and then renamed into place, so a watcher never
    sees a partly written file. Files already there are overwritten, others are left alone.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = 0
    for name, data in iter_demo(users, seed):
        tmp = directory / f".{name}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, directory / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        files += 1
    log.info("wrote %d demo users (%d files) to %s", users, files, directory)
    return users
