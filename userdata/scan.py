"""Passes over a whole listing: the fast equivalent of the catalog's rules for whole scans.

A scan looks at every object of the store, which may be millions, so these passes are written
for speed: one loop each, classification inlined, ``type() is`` for the ``str | list`` of
:data:`~userdata.catalog.Keys`, records made by ``tuple.__new__``. What they build is exactly
what :meth:`Catalog.apply <userdata.catalog.Catalog.apply>` would build from the same objects,
one by one (``tests/test_pipeline.py`` holds the two equal on random stores). Only the few
unusual users (several CSVs, a CSV gone, unreadable or invalid) go through the catalog's own
:meth:`~userdata.catalog.Catalog.resolve`.

They run on a worker thread. They read the live catalog and index only a step at a time, each
step one C call over a dict (a lookup, a set of keys), which the event loop's writes cannot come
between; what they write is only a catalog of their own that nothing else sees yet
(:func:`records` takes one from :func:`fresh_catalog`).
"""

from __future__ import annotations

from collections.abc import Callable

from .catalog import UNREAD, Catalog, Hint, Keys, Outcome, each_key, keys_with
from .objects import classify
from .records import UserFields, UserRecord
from .stores import PRESENT, Listing, ObjectError, Version

__all__ = ("UNREADABLE", "Contents", "changed", "fresh_catalog", "hinted_catalog", "records", "split")

#: What the store read: each key's version and outcome, or why it could not be read, or None: gone.
Contents = dict[str, tuple[Version, Outcome] | ObjectError | None]

#: How the reason of a file rejected because it cannot be read begins.
UNREADABLE = "cannot read: "
#: A record made in C (a NamedTuple's own constructor is a Python function).
_new = tuple.__new__


def changed(listing: Listing, catalog: Catalog) -> tuple[dict[str, Version | None], list[str]]:
    """What an incremental scan must look at: (found, CSVs to read).

    ``found`` has the images new or changed (by version) and every object gone (None); the
    CSVs new or changed are to be read. An object listed with the version it had is passed over.
    """
    versions, prefix = catalog.versions, catalog.prefix
    found: dict[str, Version | None] = {}
    read: list[str] = []
    known = 0  # objects of the catalog that are listed
    for key, version in listing.items():
        seen = versions.get(key)
        if seen is not None:
            known += 1
            if seen == version:
                continue
        obj = classify(key, prefix)
        if obj is None:
            continue
        if obj.kind == "csv":
            read.append(key)
        else:
            found[key] = version
    if known != len(versions):  # some are gone
        for key in versions.keys() - listing.keys():
            found[key] = None
    return found, read


def fresh_catalog(
    listing: Listing,
    prefix: str,
    current: Callable[[str], UserRecord | None],
    held: Callable[[str], UserRecord | None] | None = None,
) -> tuple[Catalog, list[str]]:
    """A new catalog of ``listing`` (images' versions, every user's keys) and the CSVs to read.

    ``held`` gives the index's record of a user_id: its user_id and img_path strings are used
    in place of the listing's equal ones, so the records built again equal the index's in every
    string, and the index keeps one copy of each.
    """
    catalog = Catalog(prefix, current)
    versions, csv_keys, png_keys = catalog.versions, catalog.csv_keys, catalog.png_keys
    start = len(prefix)
    read: list[str] = []
    for key, version in listing.items():
        # objects.classify(), inline: this runs once for every object in the store.
        suffix = key[-4:].lower()
        if suffix == ".csv":
            keys_of = csv_keys
        elif suffix == ".png":
            keys_of = png_keys
        else:
            continue
        user_id = key[start:-4]
        if not user_id or user_id[0] == "." or "/" in user_id or not key.startswith(prefix):
            continue
        if held is not None and (record := held(user_id)) is not None:
            user_id = record.user_id
            if record.img_path == key:
                key = record.img_path
        if keys_of is csv_keys:
            read.append(key)
        else:
            versions[key] = version
        if keys_of.setdefault(user_id, key) is not key:  # a second CSV or image of the user
            keys_of[user_id] = keys_with(keys_of[user_id], key)
    return catalog, read


def hinted_catalog(hint: Hint, prefix: str, current: Callable[[str], UserRecord | None]) -> tuple[Catalog, int]:
    """The catalog a start-up hint describes, and how many of its users ``current`` holds.

    A CSV neither rejected nor backed by a record, or whose version the hint does not hold, gets
    UNREAD, so the next scan reads it (or finds it gone). The image a record names (its
    img_path), which the hint leaves out, is the user's too. Strings are taken from the records
    where equal, as :func:`fresh_catalog` does.
    """
    catalog = Catalog(prefix, current)
    versions, csv_keys, png_keys, rejected = catalog.versions, catalog.csv_keys, catalog.png_keys, catalog.rejected
    reasons = hint.rejected
    for key, version in zip(hint.keys, hint.versions, strict=True):
        obj = classify(key, prefix)
        if obj is None:
            continue
        keys_of = csv_keys if obj.kind == "csv" else png_keys
        user_id = obj.user_id
        record = current(user_id)
        if record is not None:
            user_id = record.user_id
            if record.img_path == key:
                key = record.img_path
        reason = reasons.get(key) if reasons else None
        if reason is not None:
            rejected[key] = reason
        # A version the hint does not vouch for (none kept, or a CSV with neither a record nor a
        # reason) is UNREAD: it equals no listed one, so the object is read again if it is
        # there, and found gone if it is not.
        usable = version is not None and (keys_of is png_keys or record is not None or reason is not None)
        versions[key] = version if usable else UNREAD
        if keys_of.setdefault(user_id, key) is not key:
            keys_of[user_id] = keys_with(keys_of[user_id], key)
        if keys_of is csv_keys and record is not None and (shown := record.img_path) is not None:
            versions[shown] = PRESENT
            if png_keys.setdefault(user_id, shown) is not shown:
                png_keys[user_id] = keys_with(png_keys[user_id], shown)
    return catalog, _note_conflicts(catalog)


def _note_conflicts(catalog: Catalog) -> int:
    """Mark the CSVs of users with several as in conflict; returns how many users have a record."""
    held = 0
    for user_id, keys in catalog.csv_keys.items():
        if type(keys) is list:
            catalog.conflicts.update(keys)
        if catalog.current(user_id) is not None:
            held += 1
    return held


def records(catalog: Catalog, contents: Contents, *, rekey: bool = True) -> dict[str, UserRecord]:
    """Every user's record after reading ``contents`` (every CSV of ``catalog``): user_id -> record.

    The CSVs' versions are put in the catalog, CSVs gone since listed dropped from it, and the
    rejections noted in it. With ``rekey``, a user's images are keyed again by the CSV's user_id
    string, so one copy is kept; a rescan's catalog has the index's strings already, and the
    deletions would make the dict rebuild itself in one long step at a million users.

    Each valid CSV's outcome is taken out of ``contents`` as its record is made (what is left
    are the unusual ones): freed as the records come, its memory holds them, where freed all at
    once after them it stays the process's, in pools nothing else fills.
    """
    users: dict[str, UserRecord] = {}
    others: list[str] = []
    versions, png_keys = catalog.versions, catalog.png_keys
    take = contents.pop
    for user_id, csvs in catalog.csv_keys.items():
        content = contents.get(csvs) if type(csvs) is str else None
        if type(content) is tuple and type(fields := content[1]) is UserFields:
            versions[csvs] = take(csvs)[0]  # type: ignore[index, arg-type]  # a str, as content is not None
            pngs: Keys | None = png_keys.get(user_id)
            if pngs is None:
                img_path = None
            else:
                img_path = pngs if type(pngs) is str else pngs[0]
                if rekey:  # by this user_id, the CSV's: one string of it, not one per object
                    del png_keys[user_id]
                    png_keys[user_id] = pngs
            users[user_id] = _new(UserRecord, (user_id, *fields, img_path))
        else:
            others.append(user_id)
    if others:
        csv_keys = catalog.csv_keys
        unusual = {key: contents[key] for user_id in others for key in each_key(csv_keys[user_id])}
        found: dict[str, Version | None] = {}
        outcomes = split(unusual, found)
        for key, version in found.items():
            if version is None:
                catalog.drop_csv(key)
            else:
                versions[key] = version
        for user_id in others:
            if (record := catalog.resolve(user_id, outcomes)) is not None:
                users[user_id] = record
    return users


def split(contents: Contents, found: dict[str, Version | None]) -> dict[str, Outcome]:
    """The outcome of every key read, its version put in ``found`` (None: gone, UNREAD: unreadable)."""
    outcomes: dict[str, Outcome] = {}
    for key, content in contents.items():
        if content is None:
            found[key] = None
        elif isinstance(content, ObjectError):
            found[key] = UNREAD
            outcomes[key] = f"{UNREADABLE}{content}"
        else:
            found[key], outcomes[key] = content
    return outcomes
