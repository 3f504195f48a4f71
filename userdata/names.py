"""Object names as they enter: one that is not UTF-8 or holds a control character is no key.

A folder may hold any bytes as a name (Python gives those that are not UTF-8 as lone
surrogates), and S3 keys and webhook keys any Unicode. Such a name never becomes a key or a
user_id, so nothing downstream (JSON, output.csv, PostgreSQL, log lines) ever sees it: where
it is listed, it is rejected as a file under its escaped form (:func:`shown`).
"""

from __future__ import annotations

import re

__all__ = ("bad_name", "rejected_name", "shown", "why_bad")

#: C0 controls, DEL, C1 controls, and surrogates (not UTF-8 in a folder's name).
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def bad_name(name: str) -> bool:
    """True if ``name`` is not UTF-8 or holds a control character.

    >>> bad_name("src-data/1000.csv"), bad_name("Zoë 🙂.csv"), bad_name("a\\nb.csv"), bad_name("\\udcff.csv")
    (False, False, True, True)
    """
    return not (name.isascii() and name.isprintable()) and _BAD.search(name) is not None


def rejected_name(name: str) -> tuple[str, str] | None:
    """For a bad name (:func:`bad_name`) of a would-be source object (``*.csv``, ``*.png``): its
    escaped form and why it is rejected, as listings show it; None for any other name.

    >>> rejected_name("src/a\\nb.csv"), rejected_name("src/a\\nb.txt"), rejected_name("src/ab.csv")
    (('src/a\\\\nb.csv', 'the name holds a control character'), None, None)
    """
    if not bad_name(name) or name[-4:].lower() not in (".csv", ".png"):
        return None
    return shown(name), why_bad(name)


def why_bad(name: str) -> str:
    """The reason a bad name is rejected for."""
    if re.search("[\ud800-\udfff]", name):
        return "the name is not UTF-8"
    return "the name holds a control character"


def shown(name: str) -> str:
    """``name`` as text safe anywhere: bytes that are not UTF-8 as ``\\xNN``, control characters
    escaped as Python would (``\\n``, ``\\x01``, ``\\x85``).

    >>> shown("a\\nb\\udcff.csv")
    'a\\\\nb\\\\xff.csv'
    """
    try:  # bytes a folder's name held, back as bytes
        text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file system gave (from JSON, say)
        text = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return _BAD.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)
