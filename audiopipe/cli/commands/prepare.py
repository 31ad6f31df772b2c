"""``audiopipe probe`` (what a file is, and whether it goes as it is) and ``audiopipe prepare`` (make
files ready to send, into a folder)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from audiopipe.cli import render
from audiopipe.cli.console import bars_enabled, progress_bar, say
from audiopipe.cli.doctor import require_tools
from audiopipe.cli.exits import exit_with, prepare_exit_code, probe_exit_code
from audiopipe.cli.failures import Command
from audiopipe.cli.flags import told
from audiopipe.cli.options import Output, PrepareOptions, json_option, output_options, prepare_options
from audiopipe.cli.signals import set_stage, stops_cleanly
from audiopipe.cli.summary import failure_line
from audiopipe.errors import AudiopipeError, UsageError, setting
from audiopipe.preparation.pipeline import (
    InputItem,
    PrepareOutcome,
    PrepareSettings,
    acceptable,
    check_output_folder,
    find_inputs,
    prepare_many,
)
from audiopipe.preparation.probe import probe
from audiopipe.preparation.sniff import sniff
from audiopipe.text import safe


@click.command("probe", cls=Command)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option("One JSON object per file, for scripts.")
@stops_cleanly
def probe_cmd(*, files: tuple[Path, ...], as_json: bool) -> None:
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
    unreadable = 0
    rows = []
    set_stage("probing")
    for path in (item.path for item in _inputs(files)):
        try:
            info = probe(path)
            seen = sniff(path)
        except AudiopipeError as exc:
            unreadable += 1
            if as_json:
                click.echo(json.dumps({"path": str(path), "ok": False, "error": told(exc)}))
            else:
                say(f"audiopipe: error: {told(exc)}", err=True)
            continue
        as_is, why = acceptable(info, default_settings, seen.extension)
        if as_json:
            click.echo(json.dumps(render.probe_json(info, seen, as_is, why)))
        else:
            rows.append(render.probe_row(path, info, seen, as_is, why))
    if rows:
        for line in render.table(render.PROBE_HEADER, rows):
            say(line)
    exit_with(probe_exit_code(unreadable))


def _inputs(paths: Sequence[Path], exclude: Path | None = None) -> list[InputItem]:
    """The audio files among ``paths`` (folders searched), having said how many others were skipped."""
    found = find_inputs(paths, exclude=exclude)
    skipped = render.skipped_line(found.not_audio)
    if skipped:
        say(skipped, err=True)
    if not found.items:
        raise UsageError("no audio files found in " + ", ".join(map(str, paths)))
    return found.items


@click.command("prepare", cls=Command)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the prepared files (created if missing).")
@prepare_options
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Files prepared in parallel.")
@click.option("--overwrite", is_flag=True,
              help="Replace files in --out that audiopipe did not write for the same input and "
                   "settings (never an input itself).")
@output_options("One JSON object per input on stdout.", "No progress bar and no per-file lines.")
@stops_cleanly
def prepare_cmd(*, inputs: tuple[Path, ...], out_dir: Path, prepare: PrepareOptions, jobs: int, overwrite: bool,
                output: Output) -> None:
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
    settings = prepare.settings()
    for folder in inputs:
        if _same_folder(folder, out_dir):
            raise UsageError(f"{setting('out_dir')} {out_dir} is the input folder {folder} itself: the prepared "
                             f"files would be taken for recordings next time; choose another folder, e.g. "
                             f"{folder / 'ready'}", field="out_dir")
    check_output_folder(out_dir)  # a read-only or full --out: one line now, not one per file
    items = _inputs(inputs, exclude=out_dir)
    require_tools(settings.format)  # ffmpeg or the --format's encoder missing: now, not file by file
    shown = PrepareProgress(len(items), output)
    set_stage("preparing", "files already prepared are in place; run the same command again to finish")
    with shown.bar, shown.encodes:
        outcomes = prepare_many(items, out_dir, settings, jobs=jobs, progress=shown,
                                encode_progress=shown.encodes.update, overwrite=overwrite)
    if not output.as_json:
        say(render.prepared_line(outcomes), err=True)
    exit_with(prepare_exit_code(outcomes))


class PrepareProgress:
    """What ``prepare`` shows as each input is done: the bar, a line per file (or its JSON), what was
    cut; and a bar per long encode."""

    def __init__(self, total: int, output: Output) -> None:
        self.output = output
        self.bar = progress_bar(total, "preparing", enabled=bars_enabled(output.quiet or output.as_json))
        self.encodes = render.EncodeBars(enabled=bars_enabled(output.quiet or output.as_json))

    def __call__(self, outcome: PrepareOutcome) -> None:
        self.encodes.done(outcome.source)
        self.bar.update(1)
        if self.output.as_json:
            click.echo(json.dumps(outcome.to_dict()))
        elif outcome.error is not None:
            self.bar.write(safe(f"audiopipe: error: {failure_line(outcome)}" + render.overflow_hint(outcome.error)),
                           file=sys.stderr)
        elif not self.output.quiet:
            self.bar.write(safe(render.describe_prepared(outcome)))
        for warning in render.prepare_warnings(outcome.result) if outcome.result else ():
            self.bar.write(safe(f"audiopipe: warning: {warning}"), file=sys.stderr)  # --quiet too: audio was lost


def _same_folder(folder: Path, out_dir: Path) -> bool:
    try:
        return folder.is_dir() and out_dir.resolve() == folder.resolve()
    except (OSError, RuntimeError, ValueError):
        return False  # an input that cannot be looked at is reported in its turn
