"""The directory store: content-addressed keys, atomic durable puts, a second put of the same bytes a
no-op, reads by key only (never a path a key could smuggle in), and the spec -> store opener."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from audiopipe.store import BadKey, DirectoryStore, Store, StoreError, open_store


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_put_keys_by_content_and_reads_back(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    data = b"opus bytes" * 1000
    stored = store.put(write(tmp_path / "a.opus", data), suffix=".opus")
    sha = hashlib.sha256(data).hexdigest()
    assert (stored.key, stored.sha256, stored.size) == (sha + ".opus", sha, len(data))
    local = store.open_local(stored.key)
    assert local.read_bytes() == data and local.parent.parent == store.root
    assert store.exists(stored.key) and store.url(stored.key) is None and store.url(stored.key, ttl=60) is None
    assert isinstance(store, Store) and str(store.root) in store.describe()
    assert not os.access(local, os.W_OK) or os.geteuid() == 0  # kept read only (root may write anyway)
    assert oct(local.stat().st_mode & 0o777) == oct(0o444)


def test_same_content_twice_is_one_file_and_a_no_op(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    first = store.put(write(tmp_path / "one.wav", b"same"), suffix=".wav")
    mtime = store.open_local(first.key).stat().st_mtime_ns
    second = store.put(write(tmp_path / "two.wav", b"same"), suffix=".wav")
    assert first == second
    assert store.open_local(first.key).stat().st_mtime_ns == mtime  # not copied again
    assert [p.name for p in store.root.rglob("*") if p.is_file()] == [first.key]  # no temp file left


def test_different_suffix_is_a_different_key(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    a = store.put(write(tmp_path / "x", b"data"), suffix=".mp3")
    b = store.put(tmp_path / "x", suffix="")
    assert a.sha256 == b.sha256 and a.key != b.key and b.key == a.sha256


def test_concurrent_puts_of_the_same_content_leave_one_whole_file(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    data = os.urandom(3 << 20)
    sources = [write(tmp_path / f"s{i}", data) for i in range(6)]
    keys: list[str] = []
    threads = [threading.Thread(target=lambda p=p: keys.append(store.put(p, suffix=".wav").key)) for p in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1
    assert store.open_local(keys[0]).read_bytes() == data
    assert [p.name for p in store.root.rglob("*") if p.is_file()] == keys[:1]


@pytest.mark.parametrize("key", ["../../etc/passwd", "ab" * 32 + "/../x", "AB" * 32 + ".opus", "ab" * 31,
                                 "ab" * 32 + ".op/us", "ab" * 32 + "..", "ab" * 32 + ".opus\0", "/" + "ab" * 32, ""])
def test_keys_that_are_not_content_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = DirectoryStore(tmp_path / "store")
    for use in (store.open_local, store.exists, store.url):
        with pytest.raises(BadKey):
            use(key)


def test_a_bad_suffix_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    with pytest.raises(BadKey):
        store.put(write(tmp_path / "a", b"x"), suffix="/../../evil")
    assert not store.root.exists()


def test_missing_files_say_so(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    assert not store.exists("ab" * 32 + ".opus")
    with pytest.raises(StoreError, match="has no file"):
        store.open_local("ab" * 32 + ".opus")
    with pytest.raises(StoreError, match="cannot put"):
        store.put(tmp_path / "nothing-here", suffix=".wav")


def test_open_store_takes_a_folder_path(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), DirectoryStore)
    assert open_store(f"file://{tmp_path}").root == tmp_path  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="gs://"):
        open_store("gs://bucket/prefix")
    with pytest.raises(StoreError, match="needs an s3:// store"):
        open_store(str(tmp_path), public_base="https://cdn.example/x")
    with pytest.raises(StoreError, match="no store"):
        open_store("  ")
