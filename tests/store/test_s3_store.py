"""The S3 store against a real S3 service (moto's standalone server, see tests/s3_fixtures.py):
content-addressed objects under the prefix, a second writer harmless, downloads verified against their
key, presigned and public URLs, and one-line errors that say how to fix them and hold no secret."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from audiopipe.store import BadKey, Store, StoreError, open_store
from audiopipe.store.s3 import MAX_URL_TTL, S3Store

SECRET = "testing-secret-key"  # the fixture's fake AWS_SECRET_ACCESS_KEY: must never show


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def another_machine(spec: str, tmp_path: Path, name: str = "elsewhere") -> S3Store:
    """The same store as a worker on another machine sees it: its own empty local cache."""
    return S3Store.from_spec(spec, cache=tmp_path / name)


def objects(client, bucket: str) -> dict[str, dict]:
    return {o["Key"]: o for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_put_then_another_machine_reads_it_back(s3_spec: str, s3_bucket: str, s3_client, tmp_path: Path) -> None:
    store = open_store(s3_spec)
    assert isinstance(store, S3Store) and isinstance(store, Store)
    data = os.urandom(200_000)
    stored = store.put(write(tmp_path / "a.opus", data), suffix=".opus")
    sha = hashlib.sha256(data).hexdigest()
    assert (stored.key, stored.sha256, stored.size) == (sha + ".opus", sha, len(data))
    assert list(objects(s3_client, s3_bucket)) == [f"prepared/{stored.key}"]
    head = s3_client.head_object(Bucket=s3_bucket, Key=f"prepared/{stored.key}")
    assert head["ContentType"] == "audio/ogg"
    assert store.exists(stored.key) and not store.exists("0" * 64 + ".opus")
    elsewhere = another_machine(s3_spec, tmp_path)
    local = elsewhere.open_local(stored.key)
    assert local.read_bytes() == data and local.is_relative_to(tmp_path / "elsewhere")
    assert oct(local.stat().st_mode & 0o777) == oct(0o444)
    assert elsewhere.open_local(stored.key) == local  # the second read is the cached file
    assert [p.name for p in (tmp_path / "elsewhere").rglob("*") if p.is_file()] == [stored.key]  # no temp left
    assert store.describe() == s3_spec == open_store(store.describe()).describe()  # the spec reopens it
    assert SECRET not in store.describe() + repr(store)


def test_a_second_put_of_the_same_content_writes_nothing(s3_spec: str, s3_bucket: str, s3_client,
                                                         tmp_path: Path) -> None:
    store = open_store(s3_spec)
    first = store.put(write(tmp_path / "one.wav", b"same bytes" * 1000), suffix=".wav")
    name = f"prepared/{first.key}"
    # mark the object behind the store's back: a put that wrote again would drop the mark
    s3_client.copy_object(Bucket=s3_bucket, Key=name, CopySource={"Bucket": s3_bucket, "Key": name},
                          Metadata={"mark": "1"}, MetadataDirective="REPLACE")
    etag = s3_client.head_object(Bucket=s3_bucket, Key=name)["ETag"]
    second = another_machine(s3_spec, tmp_path).put(write(tmp_path / "two.wav", b"same bytes" * 1000), suffix=".wav")
    assert second == first
    head = s3_client.head_object(Bucket=s3_bucket, Key=name)
    assert head["Metadata"] == {"mark": "1"} and head["ETag"] == etag
    assert list(objects(s3_client, s3_bucket)) == [name]


def test_a_writer_that_loses_the_race_takes_the_key_as_written(s3_spec: str, s3_bucket: str, s3_client,
                                                               tmp_path: Path) -> None:
    """Past its HEAD, a writer whose conditional PUT finds the key taken (PreconditionFailed from the
    server) leaves the winner's object alone and succeeds."""
    store = S3Store.from_spec(s3_spec, cache=tmp_path / "cache")
    data = b"raced" * 5000
    stored = store.put(write(tmp_path / "a.mp3", data), suffix=".mp3")
    name = f"prepared/{stored.key}"
    s3_client.copy_object(Bucket=s3_bucket, Key=name, CopySource={"Bucket": s3_bucket, "Key": name},
                          Metadata={"winner": "yes"}, MetadataDirective="REPLACE")
    store._upload(store.cache.path_of(stored.key), stored, conditional=True)  # as if its HEAD had found nothing
    assert s3_client.head_object(Bucket=s3_bucket, Key=name)["Metadata"] == {"winner": "yes"}


def test_concurrent_puts_of_the_same_content_leave_one_whole_object(s3_spec: str, s3_bucket: str, s3_client,
                                                                    tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    stores = [another_machine(s3_spec, tmp_path, f"machine{i}") for i in range(4)]
    sources = [write(tmp_path / f"s{i}.wav", data) for i in range(4)]
    keys: list[str] = []
    failures: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def put(store: S3Store, source: Path) -> None:
        start.wait()
        try:
            keys.append(store.put(source, suffix=".wav").key)
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=put, args=pair) for pair in zip(stores, sources, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and len(keys) == 4 and len(set(keys)) == 1
    assert list(objects(s3_client, s3_bucket)) == [f"prepared/{keys[0]}"]
    assert another_machine(s3_spec, tmp_path).open_local(keys[0]).read_bytes() == data


def test_big_files_go_up_in_parts_and_come_back_whole(s3_spec: str, s3_bucket: str, s3_client,
                                                      tmp_path: Path) -> None:
    store = S3Store.from_spec(s3_spec, cache=tmp_path / "cache")
    store.multipart_threshold = 5 << 20  # S3's smallest part
    data = os.urandom(11 << 20)
    stored = store.put(write(tmp_path / "big.wav", data), suffix=".wav")
    etag = s3_client.head_object(Bucket=s3_bucket, Key=f"prepared/{stored.key}")["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
    assert another_machine(s3_spec, tmp_path).open_local(stored.key).read_bytes() == data
    assert store.put(tmp_path / "big.wav", suffix=".wav") == stored


def test_a_download_that_does_not_match_its_key_is_refused(s3_spec: str, s3_bucket: str, s3_client,
                                                           tmp_path: Path) -> None:
    stored = open_store(s3_spec).put(write(tmp_path / "a.opus", b"the real recording"), suffix=".opus")
    s3_client.put_object(Bucket=s3_bucket, Key=f"prepared/{stored.key}", Body=b"something else")
    elsewhere = another_machine(s3_spec, tmp_path)
    with pytest.raises(StoreError, match="does not hold the content its key names") as refused:
        elsewhere.open_local(stored.key)
    assert "\n" not in str(refused.value)
    assert not [p for p in (tmp_path / "elsewhere").rglob("*") if p.is_file()]  # nothing kept, no temp left


def test_a_missing_key_is_a_store_error(s3_spec: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="has no file"):
        another_machine(s3_spec, tmp_path).open_local("ab" * 32 + ".opus")


def test_a_presigned_url_fetches_the_object_with_plain_http(s3_spec: str, tmp_path: Path) -> None:
    store = open_store(s3_spec)
    stored = store.put(write(tmp_path / "a.mp3", b"mp3 bytes" * 100), suffix=".mp3")
    url = store.url(stored.key, ttl=90)
    assert url is not None and SECRET not in url
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200 and answer.content == b"mp3 bytes" * 100
    # moto serves a presigned URL after it expired and does not check signatures (both checked), so the
    # lifetime is checked where AWS reads it: the signed X-Amz-Expires parameter
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["90"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert parse_qs(urlsplit(store.url(stored.key, ttl=0.2) or "").query)["X-Amz-Expires"] == ["1"]
    assert parse_qs(urlsplit(store.url(stored.key) or "").query)["X-Amz-Expires"] == [str(MAX_URL_TTL)]
    assert query["X-Amz-SignedHeaders"] == ["host"] and len(query["X-Amz-Signature"][0]) == 64


@pytest.mark.parametrize("ttl", [MAX_URL_TTL + 1, 30 * 24 * 3600.0, 0, -5, float("inf"), float("nan")])
def test_a_lifetime_s3_cannot_sign_is_refused_in_one_line(s3_spec: str, ttl: float) -> None:
    with pytest.raises(StoreError) as refused:
        open_store(s3_spec).url("ab" * 32 + ".opus", ttl=ttl)
    assert "\n" not in str(refused.value) and "7 days" in str(refused.value)


def test_a_public_base_names_objects_without_a_signature(s3_spec: str, tmp_path: Path) -> None:
    store = open_store(s3_spec, public_base="https://cdn.example/prepared/")
    key = store.put(write(tmp_path / "a.opus", b"x"), suffix=".opus").key
    assert store.url(key) == f"https://cdn.example/prepared/{key}"
    assert store.url(key, ttl=30 * 24 * 3600) == f"https://cdn.example/prepared/{key}"  # no expiry to sign
    for bad in ("ftp://cdn.example/x", "https://cdn.example/x?sig=1", "cdn.example/x", "https://"):
        with pytest.raises(StoreError, match="public URL base"):
            open_store(s3_spec, public_base=bad)


@pytest.mark.parametrize("key", ["../../etc/passwd", "ab" * 32 + "/../x", "AB" * 32 + ".opus", "ab" * 31,
                                 "ab" * 32 + ".op/us", "/" + "ab" * 32, ""])
def test_keys_that_are_not_content_keys_are_refused(s3_spec: str, key: str) -> None:
    store = open_store(s3_spec)
    for use in (store.open_local, store.exists, store.url):
        with pytest.raises(BadKey):
            use(key)


def test_a_bad_suffix_is_refused_before_anything_is_sent(s3_spec: str, s3_bucket: str, s3_client,
                                                         tmp_path: Path) -> None:
    with pytest.raises(BadKey):
        open_store(s3_spec).put(write(tmp_path / "a", b"x"), suffix="/../../evil")
    assert objects(s3_client, s3_bucket) == {}


@pytest.mark.parametrize("spec", ["s3://", "s3://UPPER", "s3://a", "s3://bucket_name/x", "s3://bkt/../x",
                                  "s3://bkt/a b", "s3://-bkt"])
def test_specs_that_name_no_bucket_and_prefix_are_refused(spec: str) -> None:
    with pytest.raises(StoreError):
        open_store(spec)


def test_a_spec_is_normalised() -> None:
    assert open_store("s3://bkt//a/b/").describe() == "s3://bkt/a/b"
    assert open_store("S3://bkt").describe() == "s3://bkt"


def one_line_error(store: Store, tmp_path: Path) -> str:
    with pytest.raises(StoreError) as failed:
        store.put(write(tmp_path / "a.opus", b"some bytes"), suffix=".opus")
    message = str(failed.value)
    assert "\n" not in message and SECRET not in message
    return message


def test_an_endpoint_that_does_not_answer_is_one_line(s3_env: str, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://user:pw@127.0.0.1:{port}/")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    message = one_line_error(open_store("s3://some-bucket/x"), tmp_path)
    assert "did not answer" in message and "AWS_ENDPOINT_URL" in message
    assert f"http://127.0.0.1:{port}" in message and "pw" not in message


def test_a_missing_bucket_is_one_line(s3_env: str, tmp_path: Path) -> None:
    message = one_line_error(open_store("s3://no-such-bucket-here/x"), tmp_path)
    assert "the bucket no-such-bucket-here does not exist" in message and "s3://no-such-bucket-here/x" in message


def test_missing_credentials_are_one_line(s3_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    message = one_line_error(open_store("s3://some-bucket/x"), tmp_path)
    assert "no AWS credentials" in message and "AWS_ACCESS_KEY_ID" in message
