"""Named values (put_named/get_named): the few small values a store keeps besides content, the
preparation cache's pointers. On both kinds of store (a folder, and S3 on moto's server): read back
from a second opening of the store, the first writer wins and a second is harmless, names are checked
as strictly as keys, they live under manifests/ (never among the content keys), and a value is small."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from audiopipe.store import BadKey, DirectoryStore, StoreError, open_store
from audiopipe.store.base import MAX_NAMED_SIZE

NAME = "ab" * 32


def test_a_named_value_reads_back_from_another_opening(store_spec: str, tmp_path: Path) -> None:
    store = open_store(store_spec)
    assert store.get_named(NAME) is None
    assert store.put_named(NAME, b"first") is True
    elsewhere = open_store(store_spec)  # for S3 the same cache dir, but named values are never cached
    assert elsewhere.get_named(NAME) == b"first"
    assert store.get_named("cd" * 32) is None


def test_the_first_writer_wins_and_a_second_is_harmless(store_spec: str) -> None:
    store = open_store(store_spec)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def write(i: int) -> None:
        barrier.wait()
        results.append(store.put_named(NAME, f"writer {i}".encode()))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]  # one wrote; the others were told it was there
    value = store.get_named(NAME)
    assert value is not None and value.startswith(b"writer ")
    assert store.put_named(NAME, b"later") is False and store.get_named(NAME) == value


@pytest.mark.parametrize("name", ["../../etc/passwd", "AB" * 32, "ab" * 31, "ab" * 32 + ".json",
                                  "manifests/" + "ab" * 32, "ab" * 32 + "/x", "", "ab" * 32 + "\0"])
def test_names_that_are_not_hashes_are_refused(name: str, store_spec: str) -> None:
    store = open_store(store_spec)
    with pytest.raises(BadKey):
        store.put_named(name, b"x")
    with pytest.raises(BadKey):
        store.get_named(name)


def test_a_value_is_small(store_spec: str) -> None:
    store = open_store(store_spec)
    with pytest.raises(StoreError, match="at most"):
        store.put_named(NAME, b"x" * (MAX_NAMED_SIZE + 1))
    assert store.get_named(NAME) is None  # nothing was written


def test_named_values_live_apart_from_content(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    store.put_named(NAME, b"pointer")
    assert (tmp_path / "store" / "manifests" / NAME).read_bytes() == b"pointer"
    assert not store.exists(NAME)  # not a content key: never confused with one


def test_s3_named_values_are_objects_under_the_prefix(s3_spec: str, s3_bucket: str, s3_client) -> None:
    store = open_store(s3_spec)
    store.put_named(NAME, b"pointer")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == [f"prepared/manifests/{NAME}"]
    s3_client.put_object(Bucket=s3_bucket, Key=f"prepared/manifests/{'cd' * 32}", Body=b"y" * (MAX_NAMED_SIZE + 5))
    with pytest.raises(StoreError, match="at most"):  # too big to be ours: refused, not read whole
        store.get_named("cd" * 32)
