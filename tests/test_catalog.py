"""The catalog's rules in plain data: no store, no event loop."""

from __future__ import annotations

from userdata.catalog import UNREAD, Catalog, Changes
from userdata.records import UserFields, UserRecord

P = "src/"
ANN = UserFields("Ann", "Lee", 0)
BOB = UserFields("Bob", "Ray", 86_400_000)


class _Index(dict[str, UserRecord]):
    """The index as the catalog sees it: user_id -> record; takes the changes as the index would."""

    def take(self, changes: Changes) -> Changes:
        for record in changes.upserts:
            self[record.user_id] = record
        for user_id in changes.removals:
            self.pop(user_id, None)
        return changes


def _catalog() -> tuple[Catalog, _Index]:
    index = _Index()
    return Catalog(P, index.get), index


def test_a_valid_csv_makes_a_user_and_an_image_its_img_path() -> None:
    catalog, index = _catalog()
    changes = index.take(catalog.apply({"src/1.csv": "v1"}, {"src/1.csv": ANN}))
    assert changes == Changes([UserRecord("1", "Ann", "Lee", 0, None)], [])
    changes = index.take(catalog.apply({"src/1.png": "p1"}, {}))
    assert changes == Changes([UserRecord("1", "Ann", "Lee", 0, "src/1.png")], [])
    assert catalog.versions == {"src/1.csv": "v1", "src/1.png": "p1"}
    assert (catalog.csv_keys, catalog.png_keys) == ({"1": "src/1.csv"}, {"1": "src/1.png"})


def test_an_image_without_a_csv_is_no_user() -> None:
    catalog, index = _catalog()
    assert index.take(catalog.apply({"src/1.png": "p1"}, {})) == Changes([], ["1"])
    assert catalog.png_keys == {"1": "src/1.png"} and not index


def test_of_several_images_the_first_in_sorted_order_is_the_img_path() -> None:
    catalog, index = _catalog()
    index.take(catalog.apply({"src/1.csv": "v", "src/1.png": "p", "src/1.PNG": "q"}, {"src/1.csv": ANN}))
    assert index["1"].img_path == "src/1.PNG"
    assert catalog.png_keys == {"1": ["src/1.PNG", "src/1.png"]}
    index.take(catalog.apply({"src/1.PNG": None}, {}))
    assert index["1"].img_path == "src/1.png" and catalog.png_keys == {"1": "src/1.png"}


def test_a_rejected_csv_keeps_the_last_good_record_and_says_why() -> None:
    catalog, index = _catalog()
    index.take(catalog.apply({"src/1.csv": "v1", "src/1.png": "p"}, {"src/1.csv": ANN}))
    good = index["1"]
    changes = index.take(catalog.apply({"src/1.csv": "v2"}, {"src/1.csv": "empty file"}))
    assert changes == Changes([good], []) and index["1"] is good
    assert catalog.rejected == {"src/1.csv": "empty file"}
    index.take(catalog.apply({"src/1.csv": "v3"}, {"src/1.csv": BOB}))
    assert index["1"] == UserRecord("1", "Bob", "Ray", 86_400_000, "src/1.png") and not catalog.rejected


def test_a_rejected_csv_of_a_user_never_valid_is_no_user() -> None:
    catalog, index = _catalog()
    assert index.take(catalog.apply({"src/1.csv": "v"}, {"src/1.csv": "empty file"})) == Changes([], ["1"])
    assert catalog.rejected == {"src/1.csv": "empty file"}


def test_the_last_good_record_keeps_following_the_image() -> None:
    catalog, index = _catalog()
    index.take(catalog.apply({"src/1.csv": "v1"}, {"src/1.csv": ANN}))
    index.take(catalog.apply({"src/1.csv": "v2"}, {"src/1.csv": "empty file"}))
    index.take(catalog.apply({"src/1.png": "p"}, {}))
    assert index["1"] == UserRecord("1", "Ann", "Lee", 0, "src/1.png")


def test_an_unreadable_csv_is_rejected_and_keeps_a_version_no_listing_has() -> None:
    catalog, index = _catalog()
    index.take(catalog.apply({"src/1.csv": UNREAD}, {"src/1.csv": "cannot read: Permission denied"}))
    assert catalog.rejected == {"src/1.csv": "cannot read: Permission denied"}
    assert catalog.versions["src/1.csv"] == UNREAD and not index


def test_two_csvs_of_one_user_are_a_conflict_until_one_goes() -> None:
    catalog, index = _catalog()
    index.take(catalog.apply({"src/7.csv": "a"}, {"src/7.csv": ANN}))
    good = index["7"]
    changes = index.take(catalog.apply({"src/7.CSV": "b"}, {"src/7.CSV": BOB}))
    assert changes == Changes([good], [])  # the user keeps its record
    reason = "conflict: src/7.CSV and src/7.csv name the same user '7'"
    assert catalog.rejected == {"src/7.CSV": reason, "src/7.csv": reason}
    assert catalog.conflicts == {"src/7.CSV", "src/7.csv"}

    gone = {"src/7.csv": None}
    # The one left must be read again before the user can have its record.
    assert catalog.unread_csvs(gone, {}) == ["src/7.CSV"]
    index.take(catalog.apply(gone, {"src/7.CSV": BOB}))
    assert index["7"] == UserRecord("7", "Bob", "Ray", 86_400_000, None)
    assert not catalog.rejected and not catalog.conflicts


def test_a_new_user_named_by_its_version_alone_needs_its_csv_read() -> None:
    catalog, _ = _catalog()
    assert catalog.unread_csvs({"src/1.csv": "v"}, {}) == ["src/1.csv"]
    assert catalog.unread_csvs({"src/1.csv": "v"}, {"src/1.csv": ANN}) == []
    assert catalog.unread_csvs({"src/1.png": "p"}, {}) == []


def test_deleting_the_csv_removes_the_user_and_its_rejection() -> None:
    catalog, index = _catalog()
    index.take(catalog.apply({"src/1.csv": "v", "src/1.png": "p"}, {"src/1.csv": ANN}))
    index.take(catalog.apply({"src/1.csv": "v2"}, {"src/1.csv": "empty file"}))
    assert index.take(catalog.apply({"src/1.csv": None}, {})) == Changes([], ["1"])
    assert not catalog.rejected and catalog.csv_keys == {} and catalog.versions == {"src/1.png": "p"}


def test_deleting_the_image_clears_img_path() -> None:
    catalog, index = _catalog()
    index.take(catalog.apply({"src/1.csv": "v", "src/1.png": "p"}, {"src/1.csv": ANN}))
    index.take(catalog.apply({"src/1.png": None}, {}))
    assert index["1"].img_path is None and catalog.png_keys == {}


def test_a_csv_gone_when_read_is_dropped() -> None:
    catalog, index = _catalog()
    index.take(catalog.apply({"src/2.csv": "a", "src/2.CSV": "b"}, {"src/2.csv": ANN, "src/2.CSV": BOB}))
    catalog.drop_csv("src/2.CSV")
    assert catalog.csv_keys == {"2": "src/2.csv"}
    catalog.drop_csv("src/2.csv")
    assert catalog.csv_keys == {}


def test_keys_of_a_source_object_name_their_owner() -> None:
    catalog, _ = _catalog()
    assert catalog.owner("src/0001.CSV") == (True, "0001")
    assert catalog.owner("src/a.b.png") == (False, "a.b")
