"""``audiopipe send``: prepare one file and send it to one contact (or send a hosted file by URL).

Only failures that certainly created nothing are retried; a send whose outcome is unknown is said to
be so (exit 4), never resent. What went out is one line per message (its id alone on stdout when
stdout is not a terminal), or the server's JSON with what audiopipe did beside it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from audiopipe import scratch
from audiopipe.cli import render
from audiopipe.cli.console import bars_enabled, say
from audiopipe.cli.database import store_option
from audiopipe.cli.doctor import require_tools
from audiopipe.cli.failures import Command
from audiopipe.cli.flags import told
from audiopipe.cli.options import ClientOptions, PrepareOptions, client_options, json_option, prepare_options
from audiopipe.cli.preflight import check_token
from audiopipe.cli.send_by import SendByOptions, send_by_options
from audiopipe.cli.signals import set_stage, stops_cleanly
from audiopipe.errors import FFmpegError, PrepareError, SendError, UsageError, setting

if TYPE_CHECKING:
    from audiopipe.campaign.publish import UrlPublisher
    from audiopipe.preparation.pipeline import PrepareResult, PrepareSettings
    from audiopipe.preparation.probe import MediaInfo
    from audiopipe.send.client import LancepilotClient, SentMessage

MAY_BE_CREATED = "the message may have been created: check before sending again"


@click.command("send", cls=Command)
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@click.option("--workspace", "-w", required=True, envvar="LANCEPILOT_WORKSPACE",
              help="Workspace UUID [env LANCEPILOT_WORKSPACE].")
@click.option("--contact", "-c", required=True, help="Contact UUID.")
@click.option("--url", default=None, help="Send a hosted file by its http(s) URL instead of uploading.")
@send_by_options
@store_option
@prepare_options
@client_options
@click.option("--retries", type=click.IntRange(0, 20), default=4, show_default=True,
              help="Times to try again when nothing was sent (connection refused, 429); 0 fails at once.")
@json_option("Print the created message(s) as JSON.")
@stops_cleanly
def send_cmd(*, input_path: Path | None, workspace: str, contact: str, url: str | None,  # noqa: PLR0913 - the command's options
             sending: SendByOptions, store: str | None, prepare: PrepareOptions, client: ClientOptions, retries: int,
             as_json: bool) -> None:
    """Prepare INPUT and send it to one contact (or send a hosted file with --url).

    \b
    Examples:
      export LANCEPILOT_TOKEN=...            # or --token-file ~/.config/lancepilot-token
      audiopipe send talk.flac -w WORKSPACE_UUID -c CONTACT_UUID
      audiopipe send -w WORKSPACE_UUID -c CONTACT_UUID --url https://example.com/a.mp3
      audiopipe send talk.flac -w WORKSPACE_UUID -c CONTACT_UUID --send-by url --store s3://bucket/audio

    With --send-by url, INPUT is prepared, put into --store and sent by its URL
    (presigned for --url-ttl, or under --public-url); the URL is never printed whole.

    Only failures that certainly created nothing (connection refused, 429) are retried.
    A timeout, reset or server error after the file went out is reported as unknown and never
    resent, because the customer may already have it. Before converting a file, the token is
    checked with one request that cannot create a message (--no-preflight skips it).

    Says in one line per message what went out: INPUT -> prepared file, what was done
    (kept, remuxed, transcoded, trimmed, split), format, size, length, contact and message
    id. When stdout is not a terminal that line goes to stderr and stdout has the id alone
    (id=$(audiopipe send ...)). Audio cut to fit --max-size is a warning on stderr.

    \b
    Exit status: 0 sent; 1 refused by the server (404/413/422) or not preparable;
    2 usage; 3 authentication; 4 outcome unknown; 5 not sent after retries.
    """
    from audiopipe.send.client import check_uuid

    check_uuid(workspace, "workspace")
    check_uuid(contact, "contact")
    _check_what_to_send(input_path, url)
    delivery = Delivery(workspace, contact, as_json, publisher=_publisher(sending, store, hosted=url is not None))
    with client.client(retries) as api:
        if url is not None:
            set_stage("sending", MAY_BE_CREATED)
            delivery.sent.append(api.send_audio(workspace, contact, url))
        else:
            assert input_path is not None
            settings = prepare.settings()
            require_tools(settings.format)
            set_stage("preparing")
            with scratch.temp_dir("send") as tmp:
                result = _prepare(api, input_path, tmp, settings, delivery, preflight=not client.no_preflight)
                delivery.send_parts(api, input_path, result)
    delivery.say_sent(hosted=url is not None)


def _check_what_to_send(input_path: Path | None, url: str | None) -> None:
    if input_path is None and url is None:
        raise UsageError("give an INPUT file to upload, or --url URL to send a hosted file")
    if input_path is not None and url is not None:
        raise UsageError("give either an INPUT file or --url, not both")
    if url is not None and not url.lower().startswith(("http://", "https://")):
        from audiopipe.send.by_url import redact_file_url

        raise UsageError(f"{setting('url')} {redact_file_url(url)!r} must be an http(s) URL", field="url")


def _publisher(sending: SendByOptions, store: str | None, *, hosted: bool) -> UrlPublisher | None:
    """With --send-by url and a file to prepare: what puts its parts into --store and makes their URLs
    (checked now, before anything is prepared). A --url is sent as it is."""
    mode = sending.mode()
    if not mode.by_url or hosted:
        return None
    from audiopipe.campaign.publish import UrlPublisher
    from audiopipe.send.by_url import check_url_mode
    from audiopipe.store import open_store

    opened = open_store(store) if store else None
    check_url_mode(opened, mode)
    assert opened is not None  # check_url_mode refuses a URL send without a store
    return UrlPublisher(opened, mode)


def _prepare(api: LancepilotClient, source: Path, tmp: Path, settings: PrepareSettings, delivery: Delivery, *,
             preflight: bool) -> PrepareResult:
    """``source`` prepared into ``tmp``; with ``preflight`` the token is checked first when ffmpeg must
    run (the encode may be long). What was cut is said before the upload."""
    from audiopipe.preparation.pipeline import prepare_file

    def check_token_first(_info: MediaInfo) -> None:
        if preflight:
            check_token(api, delivery.workspace, delivery.contact, refuse_not_found=True)

    try:
        with render.EncodeBars(enabled=bars_enabled(delivery.as_json)) as encodes:
            result = prepare_file(source, tmp, settings, before_ffmpeg=check_token_first, progress=encodes.update)
    except FFmpegError as exc:  # its message does not say which file
        raise PrepareError(source, exc.message(setting), field=exc.field) from None
    for warning in render.prepare_warnings(result):  # before the upload: it may take long
        say(f"audiopipe: warning: {warning}", err=True)
    return result


@dataclass
class Delivery:
    """The messages one ``send`` created, and what it says about them."""

    workspace: str
    contact: str
    as_json: bool
    publisher: UrlPublisher | None = None   # --send-by url: each part is put into the store and sent by URL
    sent: list[SentMessage] = field(default_factory=list)
    described: list[dict[str, Any]] = field(default_factory=list)  # what audiopipe did, per message

    def send_parts(self, api: LancepilotClient, source: Path, result: PrepareResult) -> None:
        """Each part in order, part 1 first; a failure says which parts went out before it."""
        parts = len(result.outputs)
        for out in result.outputs:
            set_stage("sending", MAY_BE_CREATED + "".join(f"; part {i} of {parts} was sent: {m.id}"
                                                          for i, m in enumerate(self.sent, 1)))
            try:
                if self.publisher is not None:
                    published = self.publisher.publish(out.path)
                    self.sent.append(api.send_audio(self.workspace, self.contact, published.url))
                else:
                    self.sent.append(api.send_audio(self.workspace, self.contact, out.path,
                                                    content_type=out.content_type))
            except SendError as exc:
                self._say_stopped(exc, parts)
                raise
            how = {"sent_by": "url", "object_key": published.key} if self.publisher is not None else {}
            self.described.append(dict(render.file_fields(result, out), contact=self.contact, **how))
            if not self.as_json:
                _say_sent(render.sent_line(source, result, out, self.contact, self.sent[-1].id))

    def _say_stopped(self, exc: SendError, parts: int) -> None:
        if self.as_json:
            click.echo(json.dumps({"ok": False, "error": told(exc), "created": exc.created,
                                   "sent": [m.data for m in self.sent]}))
            for i, m in enumerate(self.sent, 1):
                say(f"part {i} of {parts} was sent: {m.id}", err=True)
        if self.sent:  # without --json, each part's line was printed as it went out
            say("to send the rest only, split the file yourself or use 'audiopipe batch' (it records every part)",
                err=True)

    def say_sent(self, *, hosted: bool) -> None:
        """The server's fields as they were, and what audiopipe did beside them (the server's win); or
        the ids on stdout for a script (each line was said as its message went out)."""
        if self.as_json:
            described = self.described + [{}] * (len(self.sent) - len(self.described))  # --url: nothing prepared
            # the server's fields as it sent them, but a URL it echoes (maybe presigned) shown redacted
            click.echo(json.dumps([{**fields, **_redacted(m.data)} for m, fields in zip(self.sent, described,
                                                                                      strict=True)]))
        elif hosted or not sys.stdout.isatty():
            for m in self.sent:
                say(m.id or "(created; the server returned no id)")


def _redacted(data: dict[str, Any]) -> dict[str, Any]:
    """The server's top-level fields with every URL in their text redacted (a signature never printed)."""
    from audiopipe.send.by_url import redact_urls_in

    return {k: redact_urls_in(v) if isinstance(v, str) else v for k, v in data.items()}


def _say_sent(line: str) -> None:
    """A person at a terminal reads the line where the output goes; a script capturing stdout
    (``id=$(audiopipe send ...)``) gets the id alone there, and the line on stderr."""
    say(line, err=not sys.stdout.isatty())
