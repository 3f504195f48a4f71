"""The catalog: which source objects are whose, and what record each user should have.

Pure and synchronous, the domain's rules in one place. Given what the store was found to hold
for some keys (key -> version, None when gone) and what their CSVs said (key -> fields, or why
the file is rejected), :meth:`Catalog.apply` updates the catalog and returns the changes the
index must take. The rules:

- a user is a user_id with one CSV; its record is that CSV's fields, and img_path the first
  (in sorted order) of its images;
- a CSV that is invalid or cannot be read is rejected with its reason, and the user keeps its
  last good record (the index's), its img_path following its images as ever;
- two CSVs naming the same user are both rejected as a conflict, and the user keeps its record
  until one of them goes;
- a user none of whose CSVs is left is removed; so is one never valid.

Keys reaching the catalog were classified as source objects where they entered (listing,
watcher, webhook), so the catalog only splits them: ``<prefix><user_id>.<csv|png>``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import NamedTuple

from .records import UserFields, UserRecord
from .stores import Version

__all__ = (
    "UNREAD",
    "Catalog",
    "Changes",
    "Hint",
    "Keys",
    "Outcome",
    "each_key",
    "first_key",
    "keys_with",
    "keys_without",
)

#: What reading a CSV gave: its fields, or why the file is rejected.
Outcome = UserFields | str
#: The keys of one user's CSVs, or of its images: the key itself when there is one (nearly
#: always), else a sorted list.
Keys = str | list[str]
#: The version of an object that could not be read: it never equals a listed one, so the next
#: rescan tries again.
UNREAD = ("unread",)


class Hint(NamedTuple):
    """What a catalog kept, as a start-up hint holds it: keys, each one's version (None:
    unknown, to be read), and why some are rejected."""

    keys: list[str]
    versions: list[Version | None]
    rejected: dict[str, str]


class Changes(NamedTuple):
    """What the index must take: records to insert or replace, user ids to remove."""

    upserts: list[UserRecord]
    removals: list[str]


def each_key(keys: Keys | None) -> Collection[str]:
    """The keys of a :data:`Keys` value, as a collection."""
    return () if keys is None else (keys,) if isinstance(keys, str) else keys


def keys_with(keys: Keys, key: str) -> Keys:
    """``keys`` and ``key``: a sorted list once there are two."""
    every = each_key(keys)
    return keys if key in every else sorted([*every, key])


def keys_without(keys: Keys, key: str) -> Keys | None:
    """``keys`` less ``key``; None when none is left."""
    rest = [k for k in each_key(keys) if k != key]
    return None if not rest else rest[0] if len(rest) == 1 else rest


def first_key(keys: Keys | None) -> str | None:
    """The first of ``keys`` in sorted order (a user's img_path), None for none."""
    return keys if keys is None or isinstance(keys, str) else keys[0]


class Catalog:
    """Every source object the index reflects, by key and by user.

    :param prefix: the source prefix the keys start with
    :param current: the record the index holds for a user_id, None for none: what a rejected
        file leaves in place
    """

    def __init__(self, prefix: str, current: Callable[[str], UserRecord | None]) -> None:
        self.prefix = prefix
        self.current = current
        #: key -> version of every image, and of every CSV read
        self.versions: dict[str, Version] = {}
        #: user_id -> keys of its CSVs (more than one is a conflict), and of its images
        self.csv_keys: dict[str, Keys] = {}
        self.png_keys: dict[str, Keys] = {}
        #: key -> why that CSV is rejected; ``conflicts`` holds those rejected for a conflict
        self.rejected: dict[str, str] = {}
        self.conflicts: set[str] = set()

    def owner(self, key: str) -> tuple[bool, str]:
        """(is it a CSV, its user_id) of a source key.

        Only splits the key: it was classified as a source object where it entered.
        """
        return key[-4:].lower() == ".csv", key[len(self.prefix) : -4]

    def apply(self, found: Mapping[str, Version | None], outcomes: Mapping[str, Outcome]) -> Changes:
        """Take what was found (key -> version, None: gone) and read (CSV key -> outcome).

        Returns the changes to the index of every user whose objects were found.
        """
        touched: set[str] = set()
        for key, version in found.items():
            is_csv, user_id = self.owner(key)
            touched.add(user_id)
            keys_of = self.csv_keys if is_csv else self.png_keys
            keys = keys_of.get(user_id)
            if version is None:
                self.versions.pop(key, None)
                self.rejected.pop(key, None)
                self.conflicts.discard(key)
                rest = None if keys is None else keys_without(keys, key)
                if rest is not None:
                    keys_of[user_id] = rest
                elif keys is not None:
                    del keys_of[user_id]
            else:
                self.versions[key] = version
                keys_of[user_id] = key if keys is None else keys_with(keys, key)
        changes = Changes([], [])
        for user_id in touched:
            record = self.resolve(user_id, outcomes)
            if record is None:
                changes.removals.append(user_id)
            else:
                changes.upserts.append(record)
        return changes

    def unread_csvs(self, found: Mapping[str, Version | None], outcomes: Mapping[str, Outcome]) -> list[str]:
        """CSVs that :meth:`apply` of ``found`` would need read but ``outcomes`` lacks.

        A user left with one CSV after a conflict, or whose only CSV was never read (a rescan
        that saw only its version), needs that CSV's content to have a record.
        """
        keys_after: dict[str, set[str]] = {}
        for key, version in found.items():
            is_csv, user_id = self.owner(key)
            if not is_csv:
                continue
            keys = keys_after.get(user_id)
            if keys is None:
                keys = keys_after[user_id] = set(each_key(self.csv_keys.get(user_id)))
            if version is None:
                keys.discard(key)
            else:
                keys.add(key)
        return [
            key
            for user_id, keys in keys_after.items()
            if len(keys) == 1
            and (key := next(iter(keys))) not in outcomes
            and (key in self.conflicts or (key not in self.rejected and self.current(user_id) is None))
        ]

    def adopt(self, other: Catalog, user_id: str) -> None:
        """Take ``user_id``'s keys, versions and rejections as ``other`` holds them."""
        for mine, theirs in ((self.csv_keys, other.csv_keys), (self.png_keys, other.png_keys)):
            for key in each_key(mine.pop(user_id, None)):
                self.versions.pop(key, None)
                self.rejected.pop(key, None)
                self.conflicts.discard(key)
            keys = theirs.get(user_id)
            if keys is None:
                continue
            mine[user_id] = keys if isinstance(keys, str) else list(keys)
            for key in each_key(keys):
                if key in other.versions:
                    self.versions[key] = other.versions[key]
                if key in other.rejected:
                    self.rejected[key] = other.rejected[key]
                if key in other.conflicts:
                    self.conflicts.add(key)

    def drop_csv(self, key: str) -> None:
        """Forget a CSV listed but gone when read."""
        _, user_id = self.owner(key)
        rest = keys_without(self.csv_keys[user_id], key)
        if rest is None:
            del self.csv_keys[user_id]
        else:
            self.csv_keys[user_id] = rest

    def resolve(self, user_id: str, outcomes: Mapping[str, Outcome]) -> UserRecord | None:
        """The record ``user_id`` should have now, None if it is not a user; rejections noted."""
        csvs = self.csv_keys.get(user_id)
        if csvs is None:
            return None
        current = self.current(user_id)
        img_path = first_key(self.png_keys.get(user_id))
        if not isinstance(csvs, str):
            reason = f"conflict: {' and '.join(csvs)} name the same user {user_id!r}"
            for key in csvs:
                self.rejected[key] = reason
                self.conflicts.add(key)
            record = current
        else:
            outcome = outcomes.get(csvs)
            if outcome is not None and csvs in self.conflicts:  # read again: the conflict is over
                self.conflicts.discard(csvs)
                self.rejected.pop(csvs, None)
            if isinstance(outcome, UserFields):
                self.rejected.pop(csvs, None)
                record = UserRecord(user_id, *outcome, img_path)
            else:
                if outcome is not None:
                    self.rejected[csvs] = outcome
                record = current  # a rejected file never removes or changes the last good record
        if record is None:
            return None
        return record if record.img_path == img_path else record._replace(img_path=img_path)
