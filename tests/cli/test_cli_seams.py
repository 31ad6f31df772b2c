"""The seams of the command line's package: settings named in errors (the library says ``max_size``, the
CLI ``--max-size``), options bundled into one argument, the exit codes the README documents, how an
error ends a command, and the stage an interruption reports. Each runs the real piece (click's own
parser through CliRunner, the real error classes, real ledgers on disk)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from audiopipe.campaign.batch import BatchResult, RowResult
from audiopipe.cli import cli, signals
from audiopipe.cli.exits import ExitCode, batch_exit_code, error_exit_code, status_exit_code
from audiopipe.cli.failures import Command
from audiopipe.cli.flags import flag, told
from audiopipe.cli.options import PrepareOptions, bundle, prepare_options
from audiopipe.errors import (
    AuthError,
    InputError,
    OutcomeUnknown,
    PrepareError,
    RateLimited,
    RefusedError,
    UsageError,
    named,
    setting,
)
from audiopipe.preparation.formats import get_format
from audiopipe.preparation.settings import PrepareSettings
from audiopipe.send.client import check_uuid, load_token
from audiopipe.units import parse_bitrate

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


# --- a setting named in a message ----------------------------------------------------------------

def test_the_library_names_a_setting_its_way_and_the_cli_by_its_flag() -> None:
    exc = UsageError(f"{setting('max_size')} 100 is too small; raise {setting('max_size')}", field="max_size")
    assert str(exc) == "max_size 100 is too small; raise max_size"
    assert told(exc) == "--max-size 100 is too small; raise --max-size"
    assert exc.field == "max_size"


def test_every_error_of_the_family_carries_its_field() -> None:
    errors = [InputError("a.wav", f"give {setting('channels')} 1", field="channels"),
              PrepareError("a.wav", "too long", field="on_overflow"),
              RefusedError("refused", status=413, field="max_size")]
    assert [e.field for e in errors] == ["channels", "on_overflow", "max_size"]
    assert str(errors[0]) == "a.wav: give channels 1" and told(errors[0]) == "a.wav: give --channels 1"
    assert UsageError("plain").field is None and told(UsageError("plain")) == "plain"


def test_a_setting_survives_being_carried_into_another_error() -> None:
    inner = InputError("a.wav", f"over {setting('max_size')}", field="max_size")
    outer = PrepareError("b.wav", inner.message(setting), field=inner.field)
    assert told(outer) == "b.wav: a.wav: over --max-size" and str(outer) == "b.wav: a.wav: over max_size"


def test_what_a_user_gave_is_never_taken_for_a_setting() -> None:
    # a name with braces or the setting's own word is text, not a mark
    exc = InputError("{max_size} max_size.wav", "cannot be read")
    assert told(exc) == str(exc) == "{max_size} max_size.wav: cannot be read"
    assert named("no marks here", flag) == "no marks here"


@pytest.mark.parametrize(("field", "option"), [
    ("max_size", "--max-size"), ("voice_note", "--voice-note"), ("out_dir", "--out"), ("state", "--state"),
    ("state_path", "--state"), ("contacts_csv", "--contacts"), ("report_path", "--report"), ("cache", "--no-cache"),
    ("fmt", "--format"), ("contacts", "--contacts"),
])
def test_each_field_is_an_option_that_exists(field: str, option: str) -> None:
    assert flag(field) == option
    every = {o for c in cli.commands.values() for p in c.params for o in getattr(p, "opts", [])}
    assert option in every



# --- the library's own errors: keywords for a Python caller, flags on the command line -------------

@pytest.mark.parametrize(("kw", "python", "field", "args", "cli_line"), [
    ({"max_size": 12}, "max_size 12 is too small", "max_size", ["--max-size", "12"], "--max-size 12 is too small"),
    ({"bitrate": 1000}, "bitrate 1k is outside 4k..512k", "bitrate", ["--bitrate", "1000"],
     "--bitrate 1k is outside 4k..512k"),
    ({"voice_note": True, "format": "mp3"}, "voice_note makes mono", "voice_note",
     ["--voice-note", "--format", "mp3"], "--voice-note makes mono"),
])
def test_a_bad_setting_names_the_keyword_in_python_and_the_flag_on_the_command_line(
        tmp_path: Path, kw: dict[str, object], python: str, field: str, args: list[str], cli_line: str) -> None:
    with pytest.raises(UsageError) as err:
        PrepareSettings(**kw)  # type: ignore[arg-type]
    assert str(err.value).startswith(python) and err.value.field == field
    assert "--" not in str(err.value)
    (tmp_path / "a.wav").write_bytes(b"")
    out = CliRunner().invoke(cli, ["prepare", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"), *args])
    assert out.exit_code == 2
    assert out.stderr.startswith(f"audiopipe: error: {cli_line}"), out.stderr
    assert told(err.value) == out.stderr.removeprefix("audiopipe: error: ").strip()


def test_the_other_settings_of_the_library_carry_their_field() -> None:
    errors = []
    for call in (lambda: PrepareSettings(channels=3), lambda: PrepareSettings(on_overflow="drop"),
                 lambda: PrepareSettings(max_passes=0), lambda: get_format("wma"),
                 lambda: check_uuid("nope", "workspace"), lambda: parse_bitrate("fast")):
        with pytest.raises(UsageError) as err:
            call()
        errors.append(err.value)
    assert [e.field for e in errors] == ["channels", "on_overflow", "max_passes", "format", "workspace", "bitrate"]
    assert str(errors[0]) == "channels must be 1 (mono) or 2 (stereo)"
    assert told(errors[0]) == "--channels must be 1 (mono) or 2 (stereo)"
    assert str(errors[4]).startswith("workspace 'nope' is not a UUID")
    assert told(errors[4]).startswith("--workspace 'nope' is not a UUID")
    assert told(errors[3]).startswith("unknown --format 'wma'") and str(errors[3]).startswith("unknown format 'wma'")


@pytest.mark.usefixtures("logging_as_it_was")
def test_a_bad_uuid_names_the_flag(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"")
    out = CliRunner().invoke(cli, ["send", str(tmp_path / "a.wav"), "-w", "nope", "-c", "also-not"])
    assert out.exit_code == 2
    assert out.stderr.startswith("audiopipe: error: --workspace 'nope' is not a UUID"), out.stderr


def test_no_token_names_token_file_in_python_and_the_flag_on_the_command_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LANCEPILOT_TOKEN", raising=False)
    monkeypatch.delenv("LANCEPILOT_TOKEN_FILE", raising=False)
    with pytest.raises(UsageError) as err:
        load_token()
    assert err.value.field == "token"
    assert str(err.value) == "no API token: set LANCEPILOT_TOKEN, or give token_file / LANCEPILOT_TOKEN_FILE"
    assert told(err.value) == "no API token: set LANCEPILOT_TOKEN, or give --token-file / LANCEPILOT_TOKEN_FILE"

# --- options that belong together ----------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    width: int
    height: int


@click.command("draw", cls=Command)
@click.option("--title", default="t", help="First.")
@bundle("window", Window,
        click.option("--width", type=int, default=3, help="Second."),
        click.option("--height", type=int, default=4, help="Third."))
@click.option("--fill", is_flag=True, help="Fourth.")
def draw(*, title: str, window: Window, fill: bool) -> None:
    click.echo(f"{title} {window!r} {fill}")


def test_bundled_options_arrive_as_one_object_and_keep_their_place_in_help() -> None:
    out = CliRunner().invoke(draw, ["--height", "9", "--fill"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "t Window(width=3, height=9) True"
    assert [p.name for p in draw.params] == ["title", "width", "height", "fill"]
    shown = CliRunner().invoke(draw, ["--help"]).output
    assert shown.index("--title") < shown.index("--width") < shown.index("--height") < shown.index("--fill")


def test_the_prepare_options_are_the_one_way_to_settings() -> None:
    @click.command()
    @prepare_options
    def show(*, prepare: PrepareOptions) -> None:
        s = prepare.settings()
        click.echo(f"{s.format} {s.max_size} {s.channels} {s.cache}")

    out = CliRunner().invoke(show, ["--format", "MP3", "--max-size", "5MB", "--channels", "1", "--no-cache"])
    assert out.output.strip() == "mp3 5000000 1 False", out.output


# --- how an error ends a command -----------------------------------------------------------------

@click.command("fail", cls=Command)
@click.argument("kind")
def fail(*, kind: str) -> None:
    raise {"usage": UsageError(f"{setting('max_size')} 12 is too small", field="max_size"),
           "auth": AuthError("401: the token was refused"),
           "unknown": OutcomeUnknown("no answer"),
           "input": InputError("a.wav", "no audio"),
           "disk": OSError(28, "No space left on device", "/full/x")}[kind]


@pytest.mark.parametrize(("kind", "code", "line"), [
    ("usage", 2, "audiopipe: error: --max-size 12 is too small"),
    ("auth", 3, "audiopipe: error: 401: the token was refused -- the message was not created"),
    ("unknown", 4, "audiopipe: error: no answer -- it MAY have been delivered: check before sending again"),
    ("input", 1, "audiopipe: error: a.wav: no audio"),
    ("disk", 2, "audiopipe: error: /full/x: no space left on the disk: free some space or choose another place"),
])
def test_an_error_is_one_line_and_an_exit_code(kind: str, code: int, line: str) -> None:
    out = CliRunner().invoke(fail, [kind])
    assert out.exit_code == code
    assert out.stderr.splitlines() == [line] and out.stdout == ""


@pytest.fixture
def logging_as_it_was() -> Iterator[None]:
    """The group sets up audiopipe's logger for a terminal (no propagation); later tests read it with caplog."""
    logger = logging.getLogger("audiopipe")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.usefixtures("logging_as_it_was")
def test_a_usage_error_from_the_library_names_the_flag(tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["resolve", "--state", str(tmp_path / "none.sqlite3"), "--all-unknown",
                                   "--delivered"])
    assert out.exit_code == 2
    assert out.stderr.strip() == f"audiopipe: error: no ledger at {tmp_path / 'none.sqlite3'} (give --state)"


# --- exit codes ----------------------------------------------------------------------------------

def test_the_exit_codes_are_the_ones_the_readme_documents() -> None:
    paragraph = " ".join(README.split("**Exit codes**", 1)[1].split("\n\n", 1)[0].split())
    documented = {int(n) for n in re.findall(r"(?<![\w/-])(\d{1,3})(?= )", paragraph)}
    assert documented == {int(c) for c in ExitCode}


def _result(*statuses: str, stopped: str | None = None) -> BatchResult:
    rows = [RowResult(line=i, contact="c", workspace="w", file="f", part=None, parts=None, status=s)
            for i, s in enumerate(statuses, 2)]
    return BatchResult(campaign="default", rows=rows, stopped=stopped)


@pytest.mark.parametrize(("statuses", "stopped", "code"), [
    (("sent", "already_sent"), None, ExitCode.OK),
    (("sent", "not_sent", "blocked"), None, ExitCode.NOT_SENT),
    (("not_sent", "invalid"), None, ExitCode.FAILED),
    (("failed", "unknown", "not_sent"), None, ExitCode.UNKNOWN),
    (("unknown",), "401", ExitCode.AUTH),
])
def test_the_batch_exit_code_is_the_most_urgent_row(statuses: tuple[str, ...], stopped: str | None,
                                                    code: ExitCode) -> None:
    assert batch_exit_code(_result(*statuses, stopped=stopped)) == code


def test_error_and_status_exit_codes() -> None:
    assert error_exit_code(RateLimited("429")) == ExitCode.NOT_SENT
    assert error_exit_code(RefusedError("422", status=422)) == ExitCode.FAILED
    assert error_exit_code(UsageError("x")) == ExitCode.USAGE
    assert [status_exit_code(v) for v in ("unknown", "failed", "left", "ok")] == [4, 1, 5, 0]


# --- the stage an interruption names -------------------------------------------------------------

def test_an_inner_stage_gives_way_to_the_outer_one_unless_it_is_interrupted() -> None:
    signals.set_stage("preparing", "run it again")
    with signals.stage("checking the token", "nothing was sent"):
        assert signals.interrupted_line(2, []).endswith("while checking the token; nothing partial was left; "
                                                        "nothing was sent")
    assert signals.interrupted_line(2, []) == ("audiopipe: interrupted by SIGINT while preparing; nothing partial "
                                               "was left; run it again")
    with pytest.raises(KeyboardInterrupt), signals.stage("checking the token"):
        raise KeyboardInterrupt
    assert "while checking the token" in signals.interrupted_line(15, [Path("/tmp/x")])


def test_each_command_is_found_under_its_own_name() -> None:
    names = sorted(cli.commands)
    assert {"prepare", "send", "batch", "db", "check"} <= set(names)
    assert all(cli.commands[name].name == name for name in names)
    assert cli.commands["check"].hidden and not cli.commands["doctor"].hidden
    assert "no-such-command" not in cli.commands and cli.commands.get("no-such-command") is None


def test_a_prepare_does_not_load_the_sending_side(tmp_path: Path) -> None:
    # a fresh interpreter: this one has imported everything already (sqlite3 is not asked: coverage uses it)
    script = ("import sys\nfrom audiopipe.cli import cli\n"
              "cli(['prepare', '--help'], standalone_mode=False)\n"
              "print(sorted(m for m in ('urllib3', 'requests', 'psycopg', 'procrastinate', 'boto3')"
              " if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    every = subprocess.run([sys.executable, "-c", script.replace("'prepare'", "'batch'")],
                           capture_output=True, text=True, timeout=60, check=True)
    assert "urllib3" in every.stdout.strip().splitlines()[-1]  # the check can see an import
