"""The send mode and the URL of a stored file: what --send-by, --url-ttl and --public-url accept, what a
campaign's settings keep of them, and the URLs a folder store (under --public-url) and an S3 store
(presigned, on moto's server) give, with the lifetime asked for and never more than S3 allows."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from audiopipe.campaign.pg.campaigns import CampaignSettings
from audiopipe.errors import UsageError
from audiopipe.send.by_url import (
    DEFAULT_URL_TTL,
    SendBy,
    SendMode,
    check_url_mode,
    file_url,
    parse_ttl,
)
from audiopipe.store import DirectoryStore, open_store


def test_ttl_takes_seconds_and_units_and_refuses_the_rest():
    assert [parse_ttl(t) for t in ("3600", "90m", "12h", "7d", " 2d ")] == [3600, 5400, 43200, 604800, 172800]
    for bad in ("", "7 days", "-5", "1w", "1.5h"):
        with pytest.raises(UsageError, match="--url-ttl"):
            parse_ttl(bad)
    with pytest.raises(UsageError, match="at least 60"):
        SendMode(SendBy.URL, url_ttl=59)
    assert DEFAULT_URL_TTL == 7 * 86400


def test_a_public_url_is_https_or_loopback_http_without_query():
    assert SendMode(SendBy.URL, public_url="https://cdn.example/audio/").public_url == "https://cdn.example/audio"
    assert SendMode(SendBy.URL, public_url="http://127.0.0.1:8080/x").public_url == "http://127.0.0.1:8080/x"
    for bad in ("http://cdn.example/audio", "https://cdn.example/a?sig=secret", "ftp://cdn.example", "cdn.example"):
        with pytest.raises(UsageError) as refused:
            SendMode(SendBy.URL, public_url=bad)
        assert "secret" not in str(refused.value)


def test_a_campaign_keeps_the_mode_and_an_older_campaign_reads_as_upload():
    settings = CampaignSettings(rate=5.0, store="s3://b/p", send_by="url", url_ttl=7200, public_url=None)
    from dataclasses import asdict

    again = CampaignSettings.from_json(asdict(settings))
    assert again == settings and again.mode == SendMode(SendBy.URL, url_ttl=7200)
    old = CampaignSettings.from_json({"rate": 5, "attempts": 3, "store": "/srv/store"})
    assert old.mode == SendMode() and old.mode.send_by is SendBy.UPLOAD


def test_a_folder_store_needs_a_public_url(tmp_path: Path):
    store = DirectoryStore(tmp_path / "store")
    with pytest.raises(UsageError, match="gives no URL"):
        check_url_mode(store, SendMode(SendBy.URL))
    with pytest.raises(UsageError, match="needs --store"):
        check_url_mode(None, SendMode(SendBy.URL))
    check_url_mode(None, SendMode())  # upload: nothing to check
    check_url_mode(store, SendMode(SendBy.URL, public_url="https://cdn.example"))


def test_s3_presigns_for_the_lifetime_asked_and_refuses_more_than_it_allows(s3_spec, tmp_path: Path):
    store = open_store(s3_spec)
    source = tmp_path / "a.ogg"
    source.write_bytes(b"OggS" + bytes(range(256)) * 8)
    key = store.put(source, suffix=".ogg").key
    url = file_url(store, key, SendMode(SendBy.URL, url_ttl=10800))
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["10800"] and "X-Amz-Signature" in query
    assert requests.get(url, timeout=10).content == source.read_bytes()  # the URL the API is given works
    with pytest.raises(UsageError):
        check_url_mode(store, SendMode(SendBy.URL, url_ttl=8 * 86400))  # over S3's 7 days: said before any work
    public = file_url(store, key, SendMode(SendBy.URL, public_url="https://cdn.example/p"))
    assert public == f"https://cdn.example/p/{key}"  # the object's key under the public base, unsigned


def test_the_journal_keeps_how_a_result_was_sent():
    from audiopipe.campaign.ledger import SendKey
    from audiopipe.campaign.pg.claims import Claim, Result
    from audiopipe.campaign.pg.journal import from_line, to_line

    claim = Claim(SendKey("c", "w", "k", "s" * 64, 1), 2, "worker", 1, "a.wav", None, None, "ab" * 32 + ".ogg")
    result = Result(claim, "sent", "m1", None, 201, 0.0, "url")
    assert from_line(to_line(result)) == result
    older = to_line(result).replace(b',"sent_by":"url"', b"")  # a line a journal wrote before URL sends
    assert from_line(older) == Result(claim, "sent", "m1", None, 201, 0.0, None)
