"""The command line. Thin: it parses, calls the library, prints, and picks the exit code.

Only this module prints or exits. Library errors become one line on stderr (the traceback only
with --debug) and an exit code cron can act on.
"""

from __future__ import annotations

import copy
import enum
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from audiopipe import __version__, paths, runner, scratch
from audiopipe.cli.summary import (
    PROBLEM_STATUSES,
    batch_lines,
    failure_line,
    interrupted_after,
    problem_groups_json,
)
from audiopipe.cli import render
from audiopipe.cli.bars import BatchBars
from audiopipe.cli.console import bars_enabled, progress_bar, say, setup_logging
from audiopipe.cli.doctor import require_tools
from audiopipe.errors import (
    AudiopipeError,
    AuthError,
    ConnectFailed,
    FFmpegError,
    GaveUp,
    OutcomeUnknown,
    OutputError,
    PrepareError,
    RefusedError,
    SendError,
    TokenRefused,
    ToolMissingError,
    UsageError,
    os_error_line,
)
from audiopipe.preparation.formats import FORMAT_NAMES
from audiopipe.preparation.outputs import Protected
from audiopipe.preparation.pipeline import (
    OVERFLOW_CHOICES,
    PrepareOutcome,
    PrepareSettings,
    acceptable,
    check_output_folder,
    collect_inputs,
    find_inputs,
    prepare_many,
)
from audiopipe.preparation.plan import DoesNotFit
from audiopipe.preparation.probe import probe
from audiopipe.preparation.sniff import sniff
from audiopipe.text import human_duration, human_size, safe
from audiopipe.units import parse_bitrate, parse_size

log = logging.getLogger(__name__)


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1        # some inputs failed / refused by the server
    USAGE = 2         # a bad flag, setting or set-up (ffmpeg missing)
    AUTH = 3
    UNKNOWN = 4       # an upload's outcome is unknown: it may have been delivered
    NOT_SENT = 5      # not sent after retries
    LOCKED = 6        # another run holds the ledger
    INTERRUPTED = 130  # Ctrl-C (SIGTERM: 143)


def _fail(message: str, code: ExitCode) -> NoReturn:
    say(f"audiopipe: error: {message}", err=True)
    sys.exit(int(code))


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one line and an exit code; tracebacks only with --debug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except AudiopipeError as exc:
            if debug:
                traceback.print_exc()
            if isinstance(exc, SendError):
                _fail(send_error_line(exc), send_exit_code(exc))
            usage = isinstance(exc, (UsageError, ToolMissingError))  # a flag, a setting or the set-up
            _fail(str(exc), ExitCode.USAGE if usage else ExitCode.FAILED)
        except OSError as exc:  # a path nothing else explained (a full or read-only disk...): the set-up
            if debug:
                traceback.print_exc()
            _fail(os_error_line(exc), ExitCode.USAGE)
        except MemoryError:
            if debug:
                traceback.print_exc()
            _fail("out of memory: an input is far larger than it should be; check the files given",
                  ExitCode.FAILED)

    return wrapper


# --- stopping on SIGINT / SIGTERM ------------------------------------------------------------------

class _Run:
    """What the command is doing now, for the one line an interruption prints."""

    stage = "starting"
    signum: int | None = None
    after = ""  # what the line adds for the stage (how to carry on)
    after_at_once = ""  # what it adds instead when a second signal stops it at once (when it differs)


def _set_stage(stage: str, after: str = "", at_once: str = "") -> None:
    _Run.stage, _Run.after, _Run.after_at_once = stage, after, at_once


JOIN_WORKERS = 1.0  # seconds the exit waits for worker threads (their ffmpeg is stopped already)


def _interrupted_line(signum: int, left: list[Path], at_once: bool = False) -> str:
    name = signal.Signals(signum).name
    line = f"audiopipe: interrupted by {name}{' again, stopped at once' if at_once else ''} while {_Run.stage}"
    line += ("; nothing partial was left" if not left else
             f"; could not remove {len(left)} temp item(s), e.g. {left[0]}")
    after = _Run.after_at_once if at_once and _Run.after_at_once else _Run.after
    return line + (f"; {after}" if after else "")


def _exit_now(code: int) -> NoReturn:
    """Leave without waiting for threads: what had to be cleaned up was, and none may hold the exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, RuntimeError):
            pass
    os._exit(code)


def _on_signal(signum: int, _frame: object) -> None:
    if _Run.signum is not None:  # a second signal: stop now, whatever is in flight
        runner.stop_children(grace=0)
        left = scratch.remove_all()
        # os.write: the interrupted main thread may be inside a write to stderr itself; on a terminal
        # the line starts on a line of its own, not at the end of a progress bar or of the echoed ^C
        start = "\n" if os.isatty(2) else ""
        os.write(2, (start + _interrupted_line(signum, left, at_once=True) + "\n").encode("utf-8", "replace"))
        os._exit(128 + signum)
    _Run.signum = signum
    runner.stop_children()  # before unwinding: every worker blocked on ffmpeg wakes up now
    raise KeyboardInterrupt


def _stop_interrupted(signum: int) -> NoReturn:
    runner.stop_children()  # no-op after a signal; a KeyboardInterrupt that came another way
    deadline = time.monotonic() + JOIN_WORKERS
    workers = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    for t in workers:
        t.join(max(0.0, deadline - time.monotonic()))
    left = scratch.remove_all()
    click.echo(_interrupted_line(signum, left), err=True)
    code = 128 + signum
    if any(t.is_alive() for t in workers):
        _exit_now(code)
    sys.exit(code)


def stops_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """SIGINT and SIGTERM stop the command promptly: its ffmpeg children are stopped, its temp files
    and folders removed, one line says what was interrupted, and it exits 130 or 143. A second
    signal stops it at once."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return func(*args, **kwargs)  # only the main thread may take signals
        _Run.signum = None
        _set_stage("starting")
        previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            _stop_interrupted(_Run.signum or signal.SIGINT)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    return wrapper


class ParsedParam(click.ParamType):
    """A click type from one of our parsers: its UsageError becomes click's usage message."""

    def __init__(self, name: str, parser: Callable[[Any], int]) -> None:
        self.name = name
        self.parser = parser

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        try:
            return self.parser(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


def SizeParam() -> ParsedParam:
    return ParsedParam("size", parse_size)


def BitrateParam() -> ParsedParam:
    return ParsedParam("bitrate", parse_bitrate)


def prepare_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that prepares audio takes (prepare, send, batch)."""
    options = [
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
    ]
    for option in reversed(options):
        func = option(func)
    return func


def settings_from(fmt: str, max_size: int, bitrate: int | None, channels: int | None, normalize: bool,
                  voice_note: bool, on_overflow: str, reencode: bool, no_cache: bool) -> PrepareSettings:
    return PrepareSettings(format=fmt.lower(), max_size=max_size, bitrate=bitrate, channels=channels,
                           normalize=normalize, voice_note=voice_note, on_overflow=on_overflow,
                           reencode=reencode, cache=not no_cache)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="audiopipe")
@click.option("--debug", is_flag=True, help="Show tracebacks and every ffmpeg command.")
@click.option("-v", "--verbose", count=True, help="More log lines (-vv for debug).")
def cli(debug: bool, verbose: int) -> None:
    """Turn audio of any format into files the Lancepilot API accepts, and send them.

    \b
    Examples:
      audiopipe probe recordings/*.wav
      audiopipe prepare recordings/ --out ready/ --jobs 2
      audiopipe prepare talk.flac --out ready/ --format mp3 --max-size 5MB

    Files the API takes as they are (MP3, Ogg/Opus, M4A/AAC, ADTS AAC, AMR under the size
    budget) are kept byte for byte; everything else is converted, fitted under the budget and
    checked the way the server checks it.
    """
    setup_logging(verbose, debug)


@cli.command("probe")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, for scripts.")
@stops_cleanly
@handle_errors
def probe_cmd(files: tuple[Path, ...], as_json: bool) -> None:
    """Describe audio files (files, or folders searched recursively): container, codec, rate,
    channels, duration, and whether they go as they are.

    \b
    Examples:
      audiopipe probe recordings/*.wav
      audiopipe probe talk.m4a --json | jq .sends_as_is

    "SENT AS IS?" says whether 'prepare' (with default settings) would send the file byte for
    byte, and if not, why: another type, tags or cover art, or over the 16,000,000-byte budget.
    In a folder, files whose names are not audio or video are skipped and counted.
    Exit status 1 when any file cannot be read.
    """
    default_settings = PrepareSettings()
    failed = 0
    rows = []
    _set_stage("probing")
    found = find_inputs(files)
    _say_skipped(found.not_audio)
    if not found.items:
        raise UsageError("no audio files found in " + ", ".join(map(str, files)))
    for f in (item.path for item in found.items):
        try:
            info = probe(f)
            seen = sniff(f)
        except AudiopipeError as exc:
            failed += 1
            if as_json:
                click.echo(json.dumps({"path": str(f), "ok": False, "error": str(exc)}))
            else:
                say(f"audiopipe: error: {exc}", err=True)
            continue
        as_is, why = acceptable(info, default_settings, seen.extension)
        if as_json:
            click.echo(json.dumps(dict(info.to_dict(), ok=True, sniffed_mime=seen.mime,
                                       server_extension=seen.extension, sends_as_is=as_is,
                                       why_not=None if as_is else why)))
        else:
            rows.append([safe(c) for c in (  # escaped before the columns are measured
                str(f), info.container.split(",")[0], info.audio.codec, str(info.audio.sample_rate),
                str(info.audio.channels), human_duration(info.duration), human_size(info.size),
                _kbps(info.audio.bit_rate or info.bit_rate), f"{info.audio_streams}/{info.video_streams}",
                seen.mime, "yes" if as_is else f"no: {why}")])
    if rows:
        header = ["FILE", "CONTAINER", "CODEC", "RATE", "CH", "DURATION", "SIZE", "BITRATE", "A/V",
                  "SNIFFED", "SENT AS IS?"]
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        for r in [header] + rows:
            say("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    sys.exit(int(ExitCode.FAILED if failed else ExitCode.OK))


def _say_skipped(not_audio: list[Path]) -> None:
    if not_audio:
        say(f"skipped {len(not_audio)} file(s) that are not audio (by their names), e.g. {not_audio[0]}", err=True)


def _kbps(bitrate: int | None) -> str:
    return f"{bitrate / 1000:.0f} kb/s" if bitrate else "-"


@cli.command("prepare")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the prepared files (created if missing).")
@prepare_options
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Files prepared in parallel.")
@click.option("--overwrite", is_flag=True,
              help="Replace files in --out that audiopipe did not write for the same input and "
                   "settings (never an input itself).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no per-file lines.")
@stops_cleanly
@handle_errors
def prepare_cmd(inputs: tuple[Path, ...], out_dir: Path, fmt: str, max_size: int, bitrate: int | None,
                channels: int | None, normalize: bool, voice_note: bool, on_overflow: str,
                reencode: bool, no_cache: bool, overwrite: bool, jobs: int, as_json: bool,
                quiet: bool) -> None:
    """Make every input (files, or folders searched recursively) ready to send, into --out.

    An output never replaces an input (the run is refused, exit 2). A file already in --out
    that audiopipe did not write for the same input and settings is left alone and that input
    fails, unless --overwrite. Running again into the same --out reuses what is there.

    \b
    Examples:
      audiopipe prepare recordings/ --out ready/ --jobs 2
      audiopipe prepare talk.flac --out ready/ --format mp3 --max-size 5MB
      audiopipe prepare lecture.wav --out ready/ --on-overflow split --json
      audiopipe prepare memo.m4a --out ready/ --voice-note

    \b
    Exit status: 0 every input prepared; 1 some failed (the others are still
    prepared, and no partial file is left behind); 2 usage error, or an output
    would replace an input.
    """
    settings = settings_from(fmt, max_size, bitrate, channels, normalize, voice_note, on_overflow,
                             reencode, no_cache)
    for folder in inputs:
        if _same_folder(folder, out_dir):
            raise UsageError(f"--out {out_dir} is the input folder {folder} itself: the prepared files "
                             f"would be taken for recordings next time; choose another folder, e.g. "
                             f"{folder / 'ready'}")
    check_output_folder(out_dir)  # a read-only or full --out: one line now, not one per file
    found = find_inputs(inputs, exclude=out_dir)
    items = found.items
    _say_skipped(found.not_audio)
    if not items:
        raise UsageError("no audio files found in " + ", ".join(map(str, inputs)))
    require_tools(settings.format)  # ffmpeg or the --format's encoder missing: now, not file by file
    bar = progress_bar(len(items), "preparing", enabled=bars_enabled(quiet or as_json))
    _set_stage("preparing", "files already prepared are in place; run the same command again to finish")
    encodes = render.EncodeBars(enabled=bars_enabled(quiet or as_json))

    def report(outcome: PrepareOutcome) -> None:
        encodes.done(outcome.source)
        bar.update(1)
        if as_json:
            click.echo(json.dumps(outcome.to_dict()))
        elif outcome.error is not None:
            bar.write(safe(f"audiopipe: error: {failure_line(outcome)}" + _hint(outcome.error)), file=sys.stderr)
        elif not quiet:
            bar.write(safe(render.describe_prepared(outcome)))
        for warning in render.prepare_warnings(outcome.result) if outcome.result else ():
            bar.write(safe(f"audiopipe: warning: {warning}"), file=sys.stderr)  # --quiet too: audio was lost

    with bar, encodes:
        outcomes = prepare_many(items, out_dir, settings, jobs=jobs, progress=report,
                                encode_progress=encodes.update, overwrite=overwrite)
    counts = Counter(o.result.action if o.result else "failed" for o in outcomes)
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("kept", "remuxed", "transcoded", "trimmed", "split", "failed"))
    if not as_json:
        say(f"prepared {len(outcomes)} input(s): {summary}", err=True)
    sys.exit(int(ExitCode.FAILED if counts.get("failed") else ExitCode.OK))


def _same_folder(folder: Path, out_dir: Path) -> bool:
    try:
        return folder.is_dir() and out_dir.resolve() == folder.resolve()
    except (OSError, RuntimeError, ValueError):
        return False  # an input that cannot be looked at is reported in its turn


def _hint(error: AudiopipeError) -> str:
    if isinstance(error, DoesNotFit):
        return " (use --on-overflow trim or split, or raise --max-size)"
    return ""


def send_exit_code(exc: SendError) -> ExitCode:
    if isinstance(exc, AuthError):
        return ExitCode.AUTH
    if isinstance(exc, OutcomeUnknown):
        return ExitCode.UNKNOWN
    if isinstance(exc, (GaveUp, ConnectFailed)) or exc.retryable:
        return ExitCode.NOT_SENT
    return ExitCode.FAILED


def send_error_line(exc: SendError) -> str:
    if isinstance(exc, TokenRefused):  # its line already says nothing was sent
        return str(exc)
    if exc.created is None:
        return f"{exc} -- it MAY have been delivered: check before sending again"
    return f"{exc} -- the message was not created"


def client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where and how to reach the API (send, batch)."""
    options = [
        click.option("--base-url", envvar="LANCEPILOT_BASE_URL", default=None,
                     help="API base URL [env LANCEPILOT_BASE_URL; default https://lancepilot.com/api/v3]."),
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
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command("send")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@click.option("--workspace", "-w", required=True, envvar="LANCEPILOT_WORKSPACE",
              help="Workspace UUID [env LANCEPILOT_WORKSPACE].")
@click.option("--contact", "-c", required=True, help="Contact UUID.")
@click.option("--url", default=None, help="Send a hosted file by its http(s) URL instead of uploading.")
@prepare_options
@client_options
@click.option("--retries", type=click.IntRange(0, 20), default=4, show_default=True,
              help="Times to try again when nothing was sent (connection refused, 429); 0 fails at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the created message(s) as JSON.")
@stops_cleanly
@handle_errors
def send_cmd(input_path: Path | None, workspace: str, contact: str, url: str | None, fmt: str,
             max_size: int, bitrate: int | None, channels: int | None, normalize: bool,
             voice_note: bool, on_overflow: str, reencode: bool, no_cache: bool,
             base_url: str | None, token_file: Path | None, connect_timeout: float,
             read_timeout: float, no_preflight: bool, retries: int, as_json: bool) -> None:
    """Prepare INPUT and send it to one contact (or send a hosted file with --url).

    \b
    Examples:
      export LANCEPILOT_TOKEN=...            # or --token-file ~/.config/lancepilot-token
      audiopipe send talk.flac -w WORKSPACE_UUID -c CONTACT_UUID
      audiopipe send -w WORKSPACE_UUID -c CONTACT_UUID --url https://example.com/a.mp3

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
    from audiopipe.preparation.pipeline import prepare_file
    from audiopipe.send.client import RetryPolicy, check_uuid

    check_uuid(workspace, "--workspace")
    check_uuid(contact, "--contact")
    if input_path is None and url is None:
        raise UsageError("give an INPUT file to upload, or --url URL to send a hosted file")
    if input_path is not None and url is not None:
        raise UsageError("give either an INPUT file or --url, not both")
    if url is not None and not url.lower().startswith(("http://", "https://")):
        raise UsageError(f"--url {url!r} must be an http(s) URL")
    from audiopipe.send.client import LancepilotClient, SentMessage

    sent: list[SentMessage] = []
    described: list[dict[str, Any]] = []
    with LancepilotClient(base_url=base_url, token_file=token_file, connect_timeout=connect_timeout,
                          read_timeout=read_timeout, retry=RetryPolicy(attempts=retries + 1)) as client:
        if url is not None:
            _set_stage("sending", "the message may have been created: check before sending again")
            sent.append(client.send_audio(workspace, contact, url))
        else:
            assert input_path is not None
            settings = settings_from(fmt, max_size, bitrate, channels, normalize, voice_note,
                                     on_overflow, reencode, no_cache)
            require_tools(settings.format)
            _set_stage("preparing")

            def check_token_first(_info: Any) -> None:  # only when ffmpeg must run: the encode may be long
                if not no_preflight:
                    _check_token(client, workspace, contact, refuse_not_found=True)

            with scratch.temp_dir("send") as tmp:
                try:
                    with render.EncodeBars(enabled=bars_enabled(as_json)) as encodes:
                        result = prepare_file(input_path, tmp, settings, before_ffmpeg=check_token_first,
                                              progress=encodes.update)
                except FFmpegError as exc:  # its message does not say which file
                    raise PrepareError(input_path, str(exc)) from None
                for warning in render.prepare_warnings(result):  # before the upload: it may take long
                    say(f"audiopipe: warning: {warning}", err=True)
                for out in result.outputs:  # parts in order, part 1 first
                    _set_stage("sending", "the message may have been created: check before sending again"
                               + "".join(f"; part {i} of {len(result.outputs)} was sent: {m.id}"
                                         for i, m in enumerate(sent, 1)))
                    try:
                        sent.append(client.send_audio(workspace, contact, out.path,
                                                      content_type=out.content_type))
                    except SendError as exc:
                        if as_json:
                            click.echo(json.dumps({"ok": False, "error": str(exc), "created": exc.created,
                                                   "sent": [m.data for m in sent]}))
                            for i, m in enumerate(sent, 1):
                                say(f"part {i} of {len(result.outputs)} was sent: {m.id}", err=True)
                        if sent:  # without --json, each part's line was printed as it went out
                            say("to send the rest only, split the file yourself or use 'audiopipe "
                                "batch' (it records every part)", err=True)
                        raise exc
                    described.append(dict(render.file_fields(result, out), contact=contact))
                    if not as_json:
                        _say_sent(render.sent_line(input_path, result, out, contact, sent[-1].id))
    if as_json:
        # the server's fields as they were, and what audiopipe did beside them (the server's win)
        described += [{}] * (len(sent) - len(described))  # --url: nothing was prepared
        click.echo(json.dumps([{**fields, **m.data} for m, fields in zip(sent, described)]))
    elif url is not None or not sys.stdout.isatty():
        for m in sent:
            say(m.id or "(created; the server returned no id)")


def _say_sent(line: str) -> None:
    """A person at a terminal reads the line where the output goes; a script capturing stdout
    (``id=$(audiopipe send ...)``) gets the id alone there, and the line on stderr."""
    say(line, err=not sys.stdout.isatty())


def _check_token(client: Any, workspace: str, contact: str, *, refuse_not_found: bool = False) -> None:
    """The token checked before the expensive work (:meth:`LancepilotClient.check_token`): a 401
    stops the command (exit 3); no verdict (429, no answer) lets it go on."""
    stage, after = _Run.stage, _Run.after
    _set_stage("checking the token", "nothing was prepared or sent")
    result = client.check_token(workspace, contact).require()
    log.info("token checked with one request that cannot create a message: %s (%.0f ms)",
             result.detail, result.seconds * 1000)
    if refuse_not_found and result.status == 404:
        raise RefusedError(result.detail.replace("could not check the token: ", "")
                           + "; found out before preparing the file", status=404)
    _set_stage(stage, after)


# --- batch and status ----------------------------------------------------------------------------

@cli.command("batch")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--contacts", "contacts_csv", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV of contacts: a contact column (contact/contact_id/id), optionally workspace "
                   "and file (file/audio/path, relative to FOLDER). Without a file column every "
                   "audio file in FOLDER goes to every contact.")
@click.option("--workspace", "-w", envvar="LANCEPILOT_WORKSPACE", default=None,
              help="Workspace UUID for rows without one [env LANCEPILOT_WORKSPACE].")
@click.option("--campaign", default="default", show_default=True, envvar="AUDIOPIPE_CAMPAIGN",
              help="Name that scopes 'already sent': the same file goes again under a new campaign "
                   "[env AUDIOPIPE_CAMPAIGN].")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="AUDIOPIPE_STATE",
              help="The ledger file [env AUDIOPIPE_STATE; default ~/.local/state/audiopipe/ledger.sqlite3].")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Uploads in flight at once.")
@click.option("--rate", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Messages per second across all uploads (0: no limit).")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Files prepared in parallel.")
@click.option("--dry-run", is_flag=True, help="Prepare and show what would be sent; send nothing.")
@click.option("--retry-unknown", is_flag=True,
              help="Also resend messages whose outcome is unknown (they may reach the contact twice).")
@click.option("--retry-failed", is_flag=True,
              help="Also resend messages the server refused (404/413/422), e.g. once a missing "
                   "contact exists. A changed file is always tried again.")
@click.option("--new-ledger", is_flag=True,
              help="Start afresh with the ledger at --state although another ledger recorded this "
                   "folder, contacts file and campaign before (or it was lost, emptied or replaced): "
                   "what it has no record of is sent again. Records the new ledger; deletes nothing.")
@click.option("--settle", type=click.FloatRange(0), default=10.0, show_default=True, envvar="AUDIOPIPE_SETTLE",
              help="Seconds a file must have been left unchanged before it is sent, so a recording "
                   "still being copied in never goes out half-written [env AUDIOPIPE_SETTLE].")
@click.option("--attempts", type=click.IntRange(1, 20), default=5, show_default=True,
              help="Tries per message within a run when it was certainly not sent (429, connection "
                   "refused); what is left is sent by the next run.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one CSV row per (contact, file, part) with its status. It replaces an "
                   "earlier report, never the contacts CSV, the ledger or a recording.")
@click.option("--overwrite", is_flag=True,
              help="Let --report replace a file that is not an earlier audiopipe report.")
@prepare_options
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@stops_cleanly
@handle_errors
def batch_cmd(folder: Path, contacts_csv: Path, workspace: str | None, campaign: str,
              state_path: Path | None, concurrency: int, rate: float, jobs: int, dry_run: bool,
              retry_unknown: bool, retry_failed: bool, new_ledger: bool, settle: float, attempts: int,
              report_path: Path | None, overwrite: bool,
              fmt: str, max_size: int,
              bitrate: int | None, channels: int | None, normalize: bool, voice_note: bool,
              on_overflow: str, reencode: bool, no_cache: bool, base_url: str | None,
              token_file: Path | None, connect_timeout: float, read_timeout: float, no_preflight: bool,
              as_json: bool, quiet: bool) -> None:
    """Send every recording in FOLDER to the contacts in a CSV, each message exactly once.

    \b
    Every send is recorded in a ledger before the request goes out and after the
    answer comes back, so running the same command again (from cron, after a crash)
    sends only what has not been sent. Messages whose outcome is unknown (a timeout
    or server error after the upload) are never resent unless --retry-unknown.

    \b
    The ledger must be the one that recorded this folder, contacts file and
    campaign before (FOLDER/.audiopipe-ledger names it): a missing, emptied,
    replaced or older ledger is refused (exit 2) instead of sending it all
    again. --new-ledger starts afresh on purpose.

    \b
    Examples:
      audiopipe batch recordings/ --contacts contacts.csv -w WORKSPACE_UUID --report report.csv
      audiopipe batch recordings/ --contacts contacts.csv -w WORKSPACE_UUID --dry-run
      audiopipe batch recordings/ --contacts contacts.csv --campaign spring --retry-failed
      # from cron, every 10 minutes:
      */10 * * * * LANCEPILOT_TOKEN_FILE=$HOME/.lancepilot-token audiopipe batch \\
          /srv/recordings --contacts /srv/contacts.csv -w WORKSPACE_UUID --quiet \\
          --report /srv/reports/last.csv >> /var/log/audiopipe.log 2>&1

    Before anything is prepared: ffmpeg and the --format's encoder are looked for, and
    the token is checked with one request that cannot create a message, to the first
    valid row's contact (--no-preflight skips it). A contacts file without one row
    that can be sent is refused.

    \b
    Exit status: 0 all sent (or already sent); 1 some failed or invalid rows;
    2 usage; 3 authentication (the run stopped); 4 some outcomes unknown;
    5 some not sent yet (rate limits, connection): the next run sends them;
    6 another run holds the ledger.
    """
    from audiopipe.campaign.batch import BatchInterrupted, BatchSettings, run_batch
    from audiopipe.campaign.ledger import LedgerLocked
    from audiopipe.campaign.report import check_report_path
    from audiopipe.send.client import LancepilotClient

    settings = BatchSettings(
        folder=folder, contacts=contacts_csv, workspace=workspace, campaign=campaign,
        prepare=settings_from(fmt, max_size, bitrate, channels, normalize, voice_note, on_overflow,
                              reencode, no_cache),
        jobs=jobs, concurrency=concurrency, rate=rate, dry_run=dry_run, retry_unknown=retry_unknown,
        retry_failed=retry_failed, settle=settle, attempts=attempts, new_ledger=new_ledger)
    verbose = bool(click.get_current_context().find_root().params.get("verbose"))
    bars = BatchBars(bars_enabled(quiet or as_json), on_stage=_batch_stage)
    client = None if dry_run else LancepilotClient(base_url=base_url, token_file=token_file,
                                                   connect_timeout=connect_timeout,
                                                   read_timeout=read_timeout)
    report_protect = None
    if report_path:  # find out now, not after every message has gone out
        check_output_folder(report_path.parent, f"cannot write the report {report_path}")
        from audiopipe.campaign.ledger import default_state_path

        report_protect = _batch_files(folder, contacts_csv, state_path or default_state_path(), token_file,
                                      inputs=os.path.lexists(report_path))
        try:
            check_report_path(report_path, protect=report_protect, overwrite=overwrite)
        except OutputError as exc:
            raise UsageError(str(exc)) from None
    require_tools(settings.prepare.format)

    def check_token_first(contacts: Any) -> None:
        if client is not None and not no_preflight:
            _check_token(client, contacts.rows[0].workspace, contacts.rows[0].contact)
    # SIGINT/SIGTERM (Ctrl-C, cron's timeout, systemd) unwind through here (stops_cleanly): sends
    # in flight finish and are recorded, then the ledger is closed
    _batch_stage("preparing")
    try:
        # a dry run reads the ledger when there is one (to say what was already sent) but never makes one
        result = run_batch(settings, sender=client, state_path=state_path, progress=bars,
                           preflight=check_token_first)
    except BatchInterrupted as exc:
        bars.close()  # before any line: nothing redraws a bar over or after what follows
        _batch_finish(exc.result, report_path, as_json, settings.campaign, settle, verbose, interrupted=True,
                      protect=report_protect, overwrite=overwrite, folder=folder)
        _set_stage(exc.stage, interrupted_after(exc.stage, exc.result))
        raise
    except LedgerLocked as exc:
        _fail(str(exc), ExitCode.LOCKED)
    finally:
        bars.close()
        if client is not None:
            client.close()
    for note in result.notes:
        say(f"audiopipe: warning: {note}", err=True)
    _batch_finish(result, report_path, as_json, settings.campaign, settle, verbose,
                  protect=report_protect, overwrite=overwrite, folder=folder)
    sys.exit(int(batch_exit_code(result)))


def _campaign_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The campaign as the batch recorded it (see campaign_name)."""
    from audiopipe.campaign.ledger import campaign_name

    try:
        return None if value is None else campaign_name(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


def _batch_files(folder: Path, contacts_csv: Path, state_file: Path, token_file: Path | None, *,
                 inputs: bool) -> Protected:
    """What the report must never replace: the contacts, the ledger (and SQLite's files beside it),
    the token file and, when ``inputs`` (a file is already at the report's path), the recordings."""
    from audiopipe.campaign.ledger import MARKER_NAME, WORK_LOCK_NAME

    files: list[tuple[Path, str]] = [(contacts_csv, "the contacts CSV")]
    files += [(Path(f"{state_file}{suffix}"), "the ledger") for suffix in ("", "-wal", "-shm", "-journal")]
    files.append((folder / MARKER_NAME, "the note of which ledger sent this folder"))
    files.append((folder / WORK_LOCK_NAME, "the lock of the run sending this folder"))
    if token_file is not None:
        files.append((token_file, "the token file"))
    if inputs:
        files += [(item.path, "the recording") for item in collect_inputs([folder])]
    return Protected(files)


def _batch_stage(stage: str) -> None:
    """What an interruption says for each stage of a batch (before the batch can say what it did)."""
    _set_stage(stage, "nothing was sent; run the same command again to continue" if stage == "preparing"
               else "sends in flight are recorded first; run the same command again to continue",
               at_once="" if stage == "preparing" else
               "the sends in flight were not recorded: the next run reports them unknown (see 'audiopipe status')")


def _batch_finish(result: Any, report_path: Path | None, as_json: bool, campaign: str, settle: float,
                  verbose: bool, interrupted: bool = False, *, protect: Any = None, overwrite: bool = False,
                  folder: Path | None = None) -> None:
    """What was cut, the report and the summary, for a whole run or for what an interrupted one did."""
    from audiopipe.campaign.report import write_report

    for outcome in result.prepared:  # what was cut: one line a file, however many contacts get it
        shown = render.name_in(folder, outcome.source) if folder is not None else outcome.source
        for warning in render.prepare_warnings(outcome.result, shown) if outcome.result else ():
            say(f"audiopipe: warning: {warning}", err=True)

    if report_path:
        try:
            write_report(report_path, (r.to_dict() for r in result.rows), result.extra_columns,
                         protect=protect or (), overwrite=overwrite)
        except AudiopipeError as exc:
            if not interrupted:
                raise
            say(f"audiopipe: error: {exc}", err=True)  # the interruption still gets its own line and code
    if as_json:
        problems = [r for r in result.rows if r.status in PROBLEM_STATUSES]
        click.echo(json.dumps(dict(result.summary(), report=str(report_path) if report_path else None,
                                   interrupted=interrupted, problem_groups=problem_groups_json(result),
                                   problems=[r.to_dict() for r in problems[:1000]],
                                   files=[render.file_fields(o.result) for o in result.prepared if o.result])))
    else:
        for line in batch_lines(result, campaign=campaign, settle=settle, verbose=verbose,
                                interrupted=interrupted):
            say(line, err=True)


def batch_exit_code(result: Any) -> ExitCode:
    counts = result.counts()
    if result.stopped:
        return ExitCode.AUTH
    if counts["unknown"]:
        return ExitCode.UNKNOWN
    if counts["failed"] or counts["invalid"]:
        return ExitCode.FAILED
    if counts["not_sent"] or counts["blocked"]:
        return ExitCode.NOT_SENT
    return ExitCode.OK


@cli.command("status")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="AUDIOPIPE_STATE",
              help="The ledger file [env AUDIOPIPE_STATE; default ~/.local/state/audiopipe/ledger.sqlite3].")
@click.option("--campaign", default=None, help="Only this campaign (default: all).", callback=_campaign_option)
@click.option("--json", "as_json", is_flag=True, help="Counts per campaign and the rows that need you, as JSON.")
@handle_errors
def status_cmd(state_path: Path | None, campaign: str | None, as_json: bool) -> None:
    """Show what the ledger knows: what was sent and what is left, per campaign.

    \b
    States: sent; pending (planned by a batch, never attempted: the next batch
    sends it); deferred (certainly not sent yet, after a 429 or a connection
    failure: the next batch sends it); blocked (a later part of a split
    recording, waiting behind an unknown or refused part); unknown (may have
    been delivered: settle it with 'audiopipe resolve', or resend it with
    batch --retry-unknown); failed (refused by the server); sending (in flight
    now, or left by a run that died: then it is unknown).

    \b
    Examples:
      audiopipe status
      audiopipe status --campaign spring --json
      audiopipe status --state /srv/audiopipe/ledger.sqlite3 || echo "something needs a look"

    \b
    Exit status, the most urgent first: 4 some unknown; 1 some failed;
    5 some not sent yet (pending, deferred, blocked or in flight);
    0 everything planned was sent.
    """
    from audiopipe.campaign.status import LIST_LIMIT, read_status
    from audiopipe.cli.status_lines import status_lines

    status = read_status(state_path, campaign, limit=None if as_json else LIST_LIMIT + 1)
    if as_json:
        click.echo(json.dumps(status.to_json()))
    else:
        verbose = bool(click.get_current_context().find_root().params.get("verbose"))
        for line in status_lines(status, verbose=verbose):
            say(line)
    codes = {"unknown": ExitCode.UNKNOWN, "failed": ExitCode.FAILED, "left": ExitCode.NOT_SENT}
    sys.exit(int(codes.get(status.verdict(), ExitCode.OK)))


@cli.command("resolve")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="AUDIOPIPE_STATE",
              help="The ledger file [env AUDIOPIPE_STATE; default ~/.local/state/audiopipe/ledger.sqlite3].")
@click.option("--campaign", default=None, help="The send's campaign (needed when another campaign has the same one).", callback=_campaign_option)
@click.option("--workspace", default=None, help="The send's workspace UUID (when two workspaces have the same one).")
@click.option("--contact", default=None, help="The contact UUID, as 'audiopipe status' shows it.")
@click.option("--file", "file_name", default=None, help="The file, as 'audiopipe status' shows it.")
@click.option("--part", type=click.IntRange(1), default=None, help="Which part of a split recording.")
@click.option("--all-unknown", is_flag=True,
              help="Every unknown send (of --campaign, --contact or --file when given).")
@click.option("--delivered/--not-delivered", default=None,
              help="What you found out: it arrived (the next batch skips it), or it did not (the next "
                   "batch sends it).")
@click.option("--message-id", default=None, help="With --delivered: the message's id, when you know it.")
@click.option("--note", default=None, help="What you checked, kept in the ledger (e.g. 'asked the customer').")
@click.option("--json", "as_json", is_flag=True, help="Print what was resolved as JSON.")
@handle_errors
def resolve_cmd(state_path: Path | None, campaign: str | None, workspace: str | None, contact: str | None,
                file_name: str | None, part: int | None, all_unknown: bool, delivered: bool | None,
                message_id: str | None, note: str | None, as_json: bool) -> None:
    """Settle a send whose outcome is unknown, once you know whether it arrived.

    \b
    An upload that got no answer (a timeout, a dropped connection, a 5xx) may or
    may not have created the message, so batch never resends it on its own.
    Check with the customer or on the Lancepilot dashboard, then say what
    happened: --delivered (recorded as sent, with --message-id if you have it;
    the next batch skips it and sends the parts after it) or --not-delivered
    (the next batch sends it). Who and when are kept in the ledger, and
    'audiopipe status' shows them. Only an unknown send can be resolved, and
    not while a batch runs on the ledger.

    \b
    Examples:
      audiopipe resolve --contact 6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21 \\
          --file talk.wav --part 1 --delivered --message-id 9b2f...
      audiopipe resolve --campaign spring --all-unknown --not-delivered

    \b
    Exit status: 0 resolved (or nothing unknown with --all-unknown); 2 the
    send is not unknown, or is not named clearly; 6 a batch holds the ledger.
    """
    from audiopipe.campaign.ledger import LedgerLocked, SqliteLedger, default_state_path
    from audiopipe.campaign.resolve import Selection, check_selection, resolve_unknown

    if delivered is None:
        raise UsageError("say what you found out: --delivered or --not-delivered")
    selection = check_selection(Selection(campaign, workspace, contact, file_name, part, all_unknown),
                                delivered=delivered, message_id=message_id, note=note)
    path = state_path or default_state_path()
    if not path.exists():
        raise UsageError(f"no ledger at {path} (give --state)")
    try:
        with SqliteLedger(path, create=False) as ledger:
            done = resolve_unknown(ledger, selection, delivered=delivered, message_id=message_id, note=note)
    except LedgerLocked as exc:
        _fail(f"{exc} (a send is resolved between runs)", ExitCode.LOCKED)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in done]))
        return
    if not done:
        say(f"nothing to resolve: no send is unknown ({selection.describe()})")
    for r in done:
        say(r.line())


@cli.command("cache")
@click.option("--clear", is_flag=True, help="Remove every cached result.")
@handle_errors
def cache_cmd(clear: bool) -> None:
    """Show (or --clear) the cache of prepared files [env AUDIOPIPE_CACHE_DIR; default ~/.cache/audiopipe].

    \b
    Examples:
      audiopipe cache
      audiopipe cache --clear
      AUDIOPIPE_CACHE_DIR=/var/cache/audiopipe audiopipe cache

    Preparing a file again with the same settings reuses its cached result. The cache only
    grows: clear it now and then (e.g. monthly from cron); nothing is lost but time.
    """
    from audiopipe.preparation.cache import Cache

    cache = Cache()
    if clear:
        say(f"removed {cache.clear()} cached result(s) from {cache.root}")
        return
    entries, size = cache.usage()
    say(f"{cache.root}: {entries} cached result(s), {human_size(size)}")


@cli.command("doctor")
@click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES, case_sensitive=False), default="ogg",
              show_default=True, envvar="AUDIOPIPE_FORMAT",
              help="The --format your runs use: its encoder must be there [env AUDIOPIPE_FORMAT].")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="AUDIOPIPE_STATE",
              help="The ledger file [env AUDIOPIPE_STATE; default ~/.local/state/audiopipe/ledger.sqlite3].")
@click.option("--base-url", envvar="LANCEPILOT_BASE_URL", default=None,
              help="API base URL [env LANCEPILOT_BASE_URL; default https://lancepilot.com/api/v3].")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="LANCEPILOT_TOKEN_FILE", help="File holding the API token [env LANCEPILOT_TOKEN_FILE].")
@click.option("--workspace", "-w", envvar="LANCEPILOT_WORKSPACE", default=None,
              help="With --contact: check the token against this real workspace [env LANCEPILOT_WORKSPACE].")
@click.option("--contact", "-c", default=None, help="Check the token against this real contact (implies --online).")
@click.option("--online", is_flag=True,
              help="Also check the token with the server: one request that cannot create a message.")
@click.option("--json", "as_json", is_flag=True, help="The checks as JSON.")
@handle_errors
def doctor_cmd(fmt: str, state_path: Path | None, base_url: str | None, token_file: Path | None,
               workspace: str | None, contact: str | None, online: bool, as_json: bool) -> None:
    """Check the set-up, one line each: ffmpeg and ffprobe, the encoder of each --format,
    libmagic, the ledger, the cache, the base URL and the token (alias: check).

    \b
    Examples:
      audiopipe doctor
      audiopipe doctor --online                    # the token, asked of the server
      audiopipe doctor -w WORKSPACE_UUID -c CONTACT_UUID --json

    The online check sends one request with no file, which the API must refuse (401 for a
    wrong token, 422 for a good one): it cannot create a message. Without -w and -c it
    names a made-up contact, which cannot receive one either.

    \b
    Exit status: 0 all ok; 1 warnings only (runs work; read them);
    2 something a run needs is missing or wrong.
    """
    from audiopipe.campaign.ledger import default_state_path
    from audiopipe.cli.doctor import EXIT_CODES, overall, run_checks
    from audiopipe.send.client import check_uuid

    if contact:
        check_uuid(contact, "--contact")
        if not workspace:
            raise UsageError("--contact needs --workspace (or LANCEPILOT_WORKSPACE)")
        check_uuid(workspace, "--workspace")
    from_env = click.get_current_context().get_parameter_source("base_url") == ParameterSource.ENVIRONMENT
    checks = run_checks(fmt=fmt.lower(), state_path=state_path or default_state_path(), base_url=base_url,
                        base_url_from="LANCEPILOT_BASE_URL" if from_env else "--base-url",
                        token_file=token_file, online=online, workspace=workspace, contact=contact)
    status = overall(checks)
    if as_json:
        click.echo(json.dumps({"status": status, "checks": [c.to_dict() for c in checks]}))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            say(f"{c.status:<4}  {c.name:<{width}}  {c.detail}")
        counts = Counter(c.status for c in checks)
        say({"ok": "all ok",
             "warn": f"{counts['warn']} warning(s): audiopipe runs; read them",
             "fail": f"{counts['fail']} failure(s): a run would be refused; fix them first"}[status])
    sys.exit(EXIT_CODES[status])


def _hidden_alias(command: click.Command, name: str) -> click.Command:
    alias = copy.copy(command)
    alias.hidden = True
    alias.name = name
    return alias


cli.add_command(_hidden_alias(doctor_cmd, "check"))


# --- the sandbox -----------------------------------------------------------------------------------

SANDBOX_TOKEN = "sandbox-token"  # public: the README and --help show it




@cli.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. 0.0.0.0 (or ::) is every address of this machine: the sandbox "
                   "is then reachable from the network, and the URLs that work are shown.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port (0 picks a free one).")
@click.option("--token", envvar="AUDIOPIPE_SANDBOX_TOKEN", default=SANDBOX_TOKEN, show_default=True,
              help="The bearer token clients must send [env AUDIOPIPE_SANDBOX_TOKEN].")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where messages and uploaded files are stored [default ~/.local/state/audiopipe/sandbox].")
@click.option("--contacts", "contacts_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Strict mode: only the contacts in this CSV exist (others get 404).")
@click.option("--php-upload-limit", type=SizeParam(), default=None,
              help="Act like PHP with a smaller upload_max_filesize (e.g. 2MB): bigger files get 422.")
@click.option("--proxy-body-limit", type=SizeParam(), default=None,
              help="Act like nginx's client_max_body_size: bigger bodies get 413 HTML.")
@click.option("--post-max-size", type=SizeParam(), default=None,
              help="Act like PHP's post_max_size: bigger uploads get 413 [default: the file limit + 4 MiB].")
@click.option("--idle-timeout", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True,
              help="Seconds a connection may stay silent, between requests or within one.")
@click.option("--header-timeout", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="Seconds the request line and headers may take in all.")
@click.option("--body-timeout", type=click.FloatRange(0, min_open=True), default=120.0, show_default=True,
              help="Seconds a request body may take in all.")
@click.option("--max-connections", type=click.IntRange(1), default=64, show_default=True,
              help="Connections served at once; more wait their turn.")
@click.option("--latency", type=click.FloatRange(0), default=0.0, help="Seconds added to every answer.")
@click.option("--rate-429", type=click.FloatRange(0, 1), default=0.0, help="Share of requests answered 429.")
@click.option("--rps-limit", type=click.IntRange(1), default=None, help="Answer 429 above this many requests a second.")
@click.option("--retry-after", type=click.IntRange(0), default=1, show_default=True, help="Retry-After of a 429, seconds.")
@click.option("--rate-500", type=click.FloatRange(0, 1), default=0.0, help="Share answered 500 before anything is stored.")
@click.option("--rate-lost", type=click.FloatRange(0, 1), default=0.0,
              help="Share of messages stored whose answer is then lost (see --lost-mode).")
@click.option("--lost-mode", type=click.Choice(["drop", "502", "delay", "mixed"]), default="mixed",
              show_default=True, help="How an answer is lost: connection dropped, 502, or delayed.")
@click.option("--lost-delay", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds a 'delay' answer waits (longer than the client's read timeout).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the faults.")
@click.option("--list", "list_only", is_flag=True, help="Print the stored messages as JSON and exit.")
@handle_errors
def sandbox_cmd(host: str, port: int, token: str, data_dir: Path | None, contacts_csv: Path | None,
                php_upload_limit: int | None, proxy_body_limit: int | None, post_max_size: int | None,
                idle_timeout: float, header_timeout: float, body_timeout: float, max_connections: int,
                latency: float, rate_429: float, rps_limit: int | None, retry_after: int, rate_500: float,
                rate_lost: float, lost_mode: str, lost_delay: float, seed: int, list_only: bool) -> None:
    """Run a local stand-in for the Lancepilot API, to try everything without an account.

    \b
    It checks what the real server checks (bearer token, UUIDs, field 'file' sniffed
    with libmagic, 16384 KB) and stores every created message in --data; the stored
    messages are at GET /_sandbox/messages, or: audiopipe sandbox --list.

    \b
    Examples:
      audiopipe sandbox --port 8765 --token secret &
      LANCEPILOT_BASE_URL=http://127.0.0.1:8765/api/v3 LANCEPILOT_TOKEN=secret \\
          audiopipe send talk.wav -w WORKSPACE_UUID -c CONTACT_UUID
      audiopipe sandbox --port 0 --rate-lost 0.1 --latency 0.05
      audiopipe sandbox --list

    Stops cleanly on Ctrl-C.
    """
    from audiopipe.sandbox.app import API_PREFIX, Faults, SandboxConfig, serve, stored_messages
    from audiopipe.sandbox.listen import reach, sandbox_banner

    data = data_dir or paths.default_sandbox_dir()
    if list_only:
        click.echo(json.dumps(stored_messages(data), indent=2))
        return
    faults = Faults(seed=seed, latency=latency, rate_429=rate_429, rps_limit=rps_limit,
                    retry_after=retry_after, rate_500=rate_500, rate_lost=rate_lost,
                    lost_mode=lost_mode, lost_delay=lost_delay)
    config = SandboxConfig(host=host, port=port, token=token, data_dir=data, contacts_csv=contacts_csv,
                           php_upload_limit=php_upload_limit, proxy_body_limit=proxy_body_limit,
                           post_max_size=post_max_size, idle_timeout=idle_timeout,
                           header_timeout=header_timeout, body_timeout=body_timeout,
                           max_connections=max_connections, faults=faults)

    def ready(sb: Any) -> None:
        where = reach(*sb.address, path=API_PREFIX)  # the socket's own address: --port 0 is the real port
        for line in sandbox_banner(where, token, SANDBOX_TOKEN, data):
            say(line, err=True)

    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # stop cleanly under kill / systemd too
    serve(config, stop_event=stop, on_ready=ready)
    say("sandbox stopped", err=True)


def main() -> None:
    cli(prog_name="audiopipe")
