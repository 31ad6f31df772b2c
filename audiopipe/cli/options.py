"""The options several commands share, and how options that belong together reach a command as one
object.

:func:`bundle` puts a group of click options (shown in ``--help`` where it stands) into one
dataclass argument, so a command takes a few objects (``prepare: PrepareOptions``, ``client:
ClientOptions``) rather than thirty values. :meth:`PrepareOptions.settings` is the one place the
command line becomes :class:`~audiopipe.preparation.pipeline.PrepareSettings`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from audiopipe.cli.flags import told
from audiopipe.errors import UsageError
from audiopipe.preparation.formats import FORMAT_NAMES
from audiopipe.preparation.pipeline import OVERFLOW_CHOICES, PrepareSettings
from audiopipe.units import parse_bitrate, parse_size

if TYPE_CHECKING:
    from audiopipe.send.client import LancepilotClient

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def bundle(name: str, build: Callable[..., Any], *options: Decorator) -> Callable[[F], F]:
    """``options`` given to the command as one argument, ``name=build(**their values)``. They show in
    ``--help`` where this decorator stands, in the order given; their names are ``build``'s keywords."""
    names = _param_names(options)

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(**{n: kwargs.pop(n) for n in names})
            return func(*args, **kwargs)

        for option in reversed(options):  # as if written one above the other here
            option(wrapper)
        return cast(F, wrapper)

    return decorate


def _param_names(options: tuple[Decorator, ...]) -> list[str]:
    """The parameter names the options give their values under (click makes one per application)."""

    def holder() -> None: ...

    for option in options:
        option(holder)
    params: list[click.Parameter] = holder.__click_params__  # type: ignore[attr-defined]  # click's own list
    return [p.name for p in params if p.name]


def options(*decorators: Decorator) -> Callable[[F], F]:
    """Several options as one decorator, in the order given."""

    def decorate(func: F) -> F:
        for option in reversed(decorators):
            func = cast(F, option(func))
        return func

    return decorate


if TYPE_CHECKING:
    _IntParam = click.ParamType[int, Any]  # generic in click's stubs, not at run time before click 8.2
else:
    _IntParam = click.ParamType


class ParsedParam(_IntParam):
    """A click type from one of our parsers: its UsageError becomes click's usage message."""

    def __init__(self, name: str, parser: Callable[[Any], int]) -> None:
        self.name = name
        self.parser = parser

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return self.parser(value)
        except UsageError as exc:
            self.fail(told(exc), param, ctx)


def SizeParam() -> ParsedParam:
    return ParsedParam("size", parse_size)


def BitrateParam() -> ParsedParam:
    return ParsedParam("bitrate", parse_bitrate)


# --- preparing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrepareOptions:
    """How to prepare, as given on the command line (prepare, send, batch)."""

    fmt: str
    max_size: int
    bitrate: int | None
    channels: int | None
    normalize: bool
    voice_note: bool
    on_overflow: str
    reencode: bool
    no_cache: bool

    def settings(self) -> PrepareSettings:
        """The settings these options stand for (refused with a :class:`UsageError` when they do not go
        together). Built when the command needs them: a send of a hosted --url never does."""
        return PrepareSettings(format=self.fmt.lower(), max_size=self.max_size, bitrate=self.bitrate,
                               channels=self.channels, normalize=self.normalize, voice_note=self.voice_note,
                               on_overflow=self.on_overflow, reencode=self.reencode, cache=not self.no_cache)


prepare_options = bundle(
    "prepare", PrepareOptions,
    click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES, case_sensitive=False),
                 default="ogg", show_default=True, envvar="AUDIOPIPE_FORMAT",
                 help="Format for files that must be converted: ogg (Opus; plays as a voice "
                      "message when mono), mp3, m4a (AAC), aac (ADTS), amr (needs an ffmpeg "
                      "with libopencore_amrnb) [env AUDIOPIPE_FORMAT]."),
    click.option("--max-size", type=SizeParam(), default="16000000", show_default=True,
                 envvar="AUDIOPIPE_MAX_SIZE",
                 help="Byte budget per file: 16MB, 15MiB, 500KB... The server's hard limit is "
                      "16384 KiB (16,777,216 bytes) [env AUDIOPIPE_MAX_SIZE]."),
    click.option("--bitrate", type=BitrateParam(), default=None,
                 help="Highest bitrate to use, e.g. 64k (a ceiling; lower is chosen to fit)."),
    click.option("--channels", type=click.IntRange(1, 2), default=None,
                 help="1 for mono, 2 for stereo (default: the source's, at most 2)."),
    click.option("--normalize", is_flag=True, help="Even out loudness (EBU R128, -16 LUFS)."),
    click.option("--voice-note", is_flag=True,
                 help="Mono Opus aimed at 512 KB or less when the duration allows, so WhatsApp "
                      "plays it inline as a voice message."),
    click.option("--on-overflow", type=click.Choice(OVERFLOW_CHOICES), default="trim",
                 show_default=True,
                 help="When even the lowest sensible bitrate cannot hold the whole recording: "
                      "trim (keep the start, fade out), split (equal parts NAME.part1of3.EXT), "
                      "or fail."),
    click.option("--reencode", is_flag=True,
                 help="Convert even files the API would accept as they are."),
    click.option("--no-cache", is_flag=True, help="Do not reuse or store prepared results."),
)
"""The options every command that prepares audio takes (prepare, send, batch), as ``prepare``."""


# --- reaching the API ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClientOptions:
    """Where and how to reach the API (send, batch)."""

    base_url: str | None
    token_file: Path | None
    connect_timeout: float
    read_timeout: float
    no_preflight: bool

    def client(self, retries: int | None = None) -> LancepilotClient:
        """A client for these options; ``retries``: times to try again when nothing was sent (the
        client's default when None)."""
        from audiopipe.send.client import LancepilotClient, RetryPolicy

        return LancepilotClient(base_url=self.base_url, token_file=self.token_file,
                                connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                                retry=None if retries is None else RetryPolicy(attempts=retries + 1))


BASE_URL_HELP = "API base URL [env LANCEPILOT_BASE_URL; default https://lancepilot.com/api/v3]."

client_options = bundle(
    "client", ClientOptions,
    click.option("--base-url", envvar="LANCEPILOT_BASE_URL", default=None, help=BASE_URL_HELP),
    click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 envvar="LANCEPILOT_TOKEN_FILE",
                 help="File holding the API token [env LANCEPILOT_TOKEN_FILE]. Otherwise the "
                      "token is read from LANCEPILOT_TOKEN; it is never printed."),
    click.option("--connect-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
                 help="Seconds to wait for a connection."),
    click.option("--read-timeout", type=click.FloatRange(0.1), default=120.0, show_default=True,
                 help="Seconds to wait for the answer once the file is sent."),
    click.option("--no-preflight", is_flag=True,
                 help="Do not check the token before preparing (one request with no file, which "
                      "the server refuses: 401 for a wrong token, 422 for a good one)."),
)
"""Where and how to reach the API (send, batch), as ``client``."""


# --- what a command prints ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Output:
    """``--json`` (for scripts) and ``--quiet`` (no bars, fewer lines)."""

    as_json: bool
    quiet: bool = False


def json_option(help: str) -> Decorator:
    return click.option("--json", "as_json", is_flag=True, help=help)


def output_options(json_help: str, quiet_help: str) -> Callable[[F], F]:
    """``--json`` and ``--quiet``/``-q``, as ``output``."""
    return bundle("output", Output, json_option(json_help),
                  click.option("--quiet", "-q", is_flag=True, help=quiet_help))


# --- the ledger --------------------------------------------------------------------------------------

STATE_HELP = "The ledger file [env AUDIOPIPE_STATE; default ~/.local/state/audiopipe/ledger.sqlite3]."

state_option = click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
                            default=None, envvar="AUDIOPIPE_STATE", help=STATE_HELP)


def campaign_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A --campaign as the batch recorded it (see :func:`audiopipe.campaign.ledger.campaign_name`)."""
    from audiopipe.campaign.ledger import campaign_name as recorded_name

    try:
        return None if value is None else recorded_name(value)
    except UsageError as exc:
        raise click.BadParameter(told(exc)) from None


def verbose() -> bool:
    """Whether the group's ``-v`` was given (more lines: every row of a problem, every file held back)."""
    return bool(click.get_current_context().find_root().params.get("verbose"))
