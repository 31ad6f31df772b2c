"""How an S3 store is named: its spec (``s3://bucket/prefix``), a public base URL, and an object's
content type. Checked before anything is sent, so a typo is a message, not a request."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

from audiopipe.store.base import StoreError

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9!_.*'()-]+")
_TYPES = {".opus": "audio/ogg", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".mp3": "audio/mpeg",
          ".m4a": "audio/mp4", ".wav": "audio/wav", ".webm": "audio/webm"}


def parse_spec(spec: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")`` (StoreError when it is not one)."""
    rest = spec.strip()[len("s3://"):] if spec.strip().lower().startswith("s3://") else None
    if rest is None:
        raise StoreError(f"not an S3 store spec (s3://bucket/prefix): {spec!r:.80}")
    bucket, _, prefix = rest.partition("/")
    if _BUCKET.fullmatch(bucket) is None or ".." in bucket:
        raise StoreError(f"not an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens): {bucket!r:.80}")
    parts = [p for p in prefix.split("/") if p]
    if any(_PREFIX_PART.fullmatch(p) is None or p in (".", "..") for p in parts):
        raise StoreError(f"an S3 store prefix is words of letters, digits and -_.!*'() between slashes: {prefix!r:.80}")
    return bucket, "/".join(parts)


def check_public_base(base: str) -> str:
    """``base`` without its trailing slash, when it is an http(s) URL with no query or fragment."""
    clean = base.strip().rstrip("/")
    if re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", clean) is None:
        raise StoreError(f"a public URL base is http(s)://host/path, with no query: {base!r:.80}")
    return clean


def content_type(key: str) -> str:
    suffix = Path(key).suffix.lower()
    return _TYPES.get(suffix) or mimetypes.guess_type("f" + suffix)[0] or "application/octet-stream"
