"""``--send-by``, ``--url-ttl`` and ``--public-url`` (send, batch): upload each message's file, or
send the URL of the file put once into ``--store`` (see :mod:`audiopipe.send.by_url`)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from audiopipe.cli.console import say
from audiopipe.cli.options import bundle
from audiopipe.errors import UsageError
from audiopipe.send.by_url import DEFAULT_URL_TTL, SHORT_URL_TTL, SendBy, SendMode, parse_ttl

SEND_BY_ENV = "AUDIOPIPE_SEND_BY"
PUBLIC_URL_ENV = "AUDIOPIPE_PUBLIC_URL"


@dataclass(frozen=True)
class SendByOptions:
    send_by: str
    url_ttl: str
    public_url: str | None

    def mode(self) -> SendMode:
        """The mode asked for; a URL setting without --send-by url, or a lifetime too short, is refused."""
        ctx = click.get_current_context()
        typed = [name for name in ("url_ttl", "public_url")
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if self.send_by != SendBy.URL.value:  # AUDIOPIPE_PUBLIC_URL set for URL campaigns is no mistake here
            if typed:
                raise UsageError("--url-ttl and --public-url are for --send-by url", field="send_by")
            return SendMode()
        mode = SendMode(SendBy(self.send_by), parse_ttl(self.url_ttl), self.public_url or None)
        if mode.by_url and mode.public_url is None and mode.url_ttl < SHORT_URL_TTL:
            say(f"audiopipe: warning: --url-ttl {self.url_ttl}: each URL is signed just before its request, but "
                "the API may fetch it later (when the message is delivered); a URL expired by then is lost. "
                f"Give at least 1d (the default is {DEFAULT_URL_TTL // 86400}d)", err=True)
        return mode


send_by_options = bundle(
    "sending", SendByOptions,
    click.option("--send-by", type=click.Choice([m.value for m in SendBy]), default=SendBy.UPLOAD.value,
                 show_default=True, envvar=SEND_BY_ENV,
                 help="upload: the file goes with every message (multipart). url: each prepared file is put "
                      "once into --store and every message gives the API its URL to fetch: a few hundred "
                      "bytes a message instead of the file; the API must reach the store, and anyone holding "
                      f"a URL can fetch the recording until it expires [env {SEND_BY_ENV}]."),
    click.option("--url-ttl", default="7d", show_default=True, metavar="DURATION",
                 help="With --send-by url: how long each presigned URL is valid from its message's request "
                      "(seconds, or 90m, 12h, 7d). 7 days is the longest S3 (and S3-compatible stores) allow; "
                      "a store that cannot sign that long says so before any work."),
    click.option("--public-url", metavar="URL", envvar=PUBLIC_URL_ENV, default=None,
                 help="With --send-by url: the https base URL the store's files are served under (a public "
                      "bucket, a CDN): URLs are this base and the file's path in the store, never signed "
                      f"nor expiring [env {PUBLIC_URL_ENV}]."),
)
"""``--send-by``, ``--url-ttl`` and ``--public-url``, as ``sending``."""
