"""Sending by URL: how a send gives the API its file, and the URL of a stored file.

The API takes a message's audio either uploaded (multipart, the default) or as ``{"file": URL}``,
which it fetches itself. By URL, a recording sent to 2,000 contacts goes over the wire once (into
the store) instead of 2,000 times: each request is a few hundred bytes. :class:`SendMode` is what a
batch or a campaign is told (``--send-by``, ``--url-ttl``, ``--public-url``); it is recorded in a
campaign's settings (never a secret), so every worker sends the campaign's files the same way.

A stored file's URL (:func:`file_url`) is either the public base URL and the file's path under it
(a bucket or folder served publicly: such a URL never expires) or the store's own URL, a presigned
GET valid ``url_ttl`` seconds from the moment it is made: a worker signs one just before each
request, so the lifetime counts from each send, not from the plan.

A presigned URL is a credential until it expires: anyone holding it can fetch the recording.
:func:`redact_file_url` is the only form in which one is shown or logged; the ledger and the report
record the file's store key, never its URL.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from audiopipe.errors import UsageError
from audiopipe.send.origin import AmbiguousURL, check_url
from audiopipe.store.base import Store, StoreError, check_key

DEFAULT_URL_TTL = 7 * 24 * 3600   # 7 days: the longest an S3 (SigV4) presigned URL may live
MIN_URL_TTL = 60                  # shorter, and a URL may expire between its signing and the API's fetch
SHORT_URL_TTL = 24 * 3600         # shorter than this: said, since the API may fetch later than the request

# Query parameters a signed URL may carry that say nothing secret: kept when one is shown, so a
# person can still tell when it was signed and for how long. Every other value is hidden.
_SHOWN_PARAMS = frozenset({"x-amz-algorithm", "x-amz-date", "x-amz-expires", "x-amz-signedheaders", "expires",
                           "x-goog-algorithm", "x-goog-date", "x-goog-expires", "x-goog-signedheaders"})


_PLAIN = re.compile(r"[\w.%-]{0,64}")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]*[^\s\"'<>.,;:)]")


class SendBy(str, enum.Enum):
    """How a send gives the API its file."""

    UPLOAD = "upload"   # multipart: the bytes go with every request
    URL = "url"         # {"file": URL}: the API fetches the stored file

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SendMode:
    """``--send-by``, ``--url-ttl`` and ``--public-url``: how a batch's or a campaign's sends give
    the API their file. ``public_url``: the base URL the store's files are served under (no query,
    no secret); without it a URL send needs a store that signs URLs (``s3://``)."""

    send_by: SendBy = SendBy.UPLOAD
    url_ttl: int = DEFAULT_URL_TTL
    public_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "send_by", SendBy(self.send_by))
        if self.url_ttl < MIN_URL_TTL:
            raise UsageError(f"--url-ttl must be at least {MIN_URL_TTL} seconds (the default is "
                             f"{DEFAULT_URL_TTL}, 7 days, the longest S3 allows)", field="url_ttl")
        if self.public_url is not None:
            object.__setattr__(self, "public_url", check_public_url(self.public_url))

    @property
    def by_url(self) -> bool:
        return self.send_by is SendBy.URL

    def to_json(self) -> dict[str, Any]:
        return {"send_by": self.send_by.value, "url_ttl": self.url_ttl, "public_url": self.public_url}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SendMode:
        """The mode a campaign's settings hold (an older campaign's, with none: upload)."""
        data = data or {}
        return cls(SendBy(data.get("send_by") or SendBy.UPLOAD.value),
                   int(data.get("url_ttl") or DEFAULT_URL_TTL), data.get("public_url") or None)


def check_public_url(url: str) -> str:
    """``url`` as a public base URL (https, or http to a loopback address), without a trailing slash."""
    try:
        checked = check_url(url.strip(), base=True)
    except AmbiguousURL as exc:
        raise UsageError(f"--public-url {redact_file_url(url)!r} refused: {exc}; write it as "
                         "https://cdn.example/prefix", field="public_url") from None
    if checked.origin.scheme == "http" and not checked.origin.is_loopback:
        raise UsageError("--public-url must be https (plain http only to a loopback address, for tests)",
                         field="public_url")
    return str(checked).rstrip("/")


def public_path(store: Store, key: str) -> str:
    """Where ``key`` is under the store's public base URL: its path inside the store's folder (a
    folder store shards its files by the first two hex digits), else the key itself."""
    check_key(key)
    path_of = getattr(store, "path_of", None)
    root = getattr(store, "root", None)
    if path_of is not None and root is not None:
        return str(path_of(key).relative_to(root).as_posix())
    return key


def file_url(store: Store, key: str, mode: SendMode) -> str:
    """The URL the API is to fetch ``key`` from: under the public base URL when there is one, else
    the store's own (presigned for ``mode.url_ttl`` seconds from now). StoreError when neither."""
    if mode.public_url:
        return f"{mode.public_url}/{public_path(store, key)}"
    url = store.url(key, ttl=mode.url_ttl)
    if url is None:
        raise StoreError(f"the store {store.describe()} gives no URL to fetch its files from: send by URL with a "
                         "store that signs URLs (s3://...), or give --public-url where the store is served")
    return url


def check_url_mode(store: Store | None, mode: SendMode) -> None:
    """Before anything is prepared: a URL send has a store, and that store (or --public-url) gives URLs
    for the lifetime asked (a store that cannot sign that long says so now). No request is made."""
    if not mode.by_url:
        return
    if store is None:
        raise UsageError("--send-by url needs --store (where each prepared file is put once for the API to "
                         "fetch), e.g. --store s3://bucket/prefix", field="store")
    try:
        file_url(store, "0" * 64 + ".opus", mode)
    except StoreError as exc:  # no URL from this store, or not for that long: the settings are wrong
        raise UsageError(str(exc), field="url_ttl" if mode.public_url is None else "store") from None


def parse_ttl(text: str | int) -> int:
    """A URL lifetime as seconds: ``3600``, ``90m``, ``12h``, ``7d`` (UsageError otherwise)."""
    found = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(text).lower())
    if found is None:
        raise UsageError(f"--url-ttl {str(text)!r:.40} is not a duration (seconds, or like 90m, 12h, 7d)",
                         field="url_ttl")
    return int(found[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[found[2]]


def redact_file_url(url: str) -> str:
    """``url`` fit to show or log: user-info and fragment hidden, and every query value hidden but those
    that are not secret (when it was signed, for how long). A presigned URL's signature, credential and
    token never appear."""
    url = re.sub(r"(?<=://)[^/?#]*@", "...@", url)
    url = re.sub(r"#.*", "", url, flags=re.S)
    base, mark, query = url.partition("?")
    if not mark:
        return base
    shown = [f"{_name(k)}={v}" if k.lower() in _SHOWN_PARAMS and _PLAIN.fullmatch(v) else f"{_name(k)}=..."
             for k, v in parse_qsl(query, keep_blank_values=True)]
    return f"{base}?{'&'.join(shown) or '...'}"


def _name(key: str) -> str:
    return key if _PLAIN.fullmatch(key) else "?"


def redact_urls_in(text: str) -> str:
    """``text`` (a server's error message, a log line) with every URL in it redacted: a server that
    quotes the URL it could not fetch must not put a signature into the ledger, a report or a log."""
    return _URL_IN_TEXT.sub(lambda m: redact_file_url(m.group(0)), text)
