"""Small helpers the media tests share (not fixtures: plain functions)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audiopipe.preparation.pipeline import PrepareSettings


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden ones (temp ``.part`` files) included, but for the
    sidecars that record what audiopipe wrote (``.STEM.audiopipe.json``, see audiopipe.preparation.outputs)."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not p.name.endswith(".audiopipe.json"))


def settings(tmp_path: Path, **kw) -> PrepareSettings:  # type: ignore[no-untyped-def]
    """Prepare settings whose cache lives in the test's own folder."""
    return PrepareSettings(cache_dir=tmp_path / "cache", **kw)


# The API's own words and limits (docs/api.md §1-2), written out here so a change in the sandbox shows.
WS = "0b6f2a52-6a1f-4b52-9a53-2f0f6a0f7c11"
CONTACT = "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21"
MIMES_MSG = "The file field must be a file of type: aac, amr, mp3, m4a, ogg."
SIZE_MSG = "The file field must not be greater than 16384 kilobytes."
MAX_BYTES = 16_777_216


# --- command lines written for people (--help examples, the README), checked against the CLI ------

SHELL_OPERATORS = {"|", "||", "&&", ";", "&"}


def command_lines(text: str) -> list[list[str]]:
    """The shell words of each ``audiopipe ...`` invocation in ``text``: lines ending in ``\\`` are
    joined, ``# comments`` dropped, pipelines cut at their operators, and the optional parts of a
    synopsis (``[--clear]``) taken as written. Words before ``audiopipe`` (``X=1``, a cron schedule,
    a path to the program) are dropped, so each list starts with ``audiopipe``."""
    import shlex

    found = []
    for line in text.replace("\\\n", " ").splitlines():
        if "audiopipe" not in line:
            continue
        words = without_redirections(shlex.split(line.replace("[", " ").replace("]", " "), comments=True))
        segment: list[str] = []
        for word in [*words, ";"]:
            if word not in SHELL_OPERATORS:
                segment.append(word)
                continue
            starts = [i for i, w in enumerate(segment) if w == "audiopipe" or (w.endswith("/audiopipe")
                                                                            and "=" not in w)]
            if starts:
                found.append(["audiopipe", *segment[starts[0] + 1:]])
            segment = []
    return found


def without_redirections(words: list[str]) -> list[str]:
    """``> file``, ``>> log``, ``2>&1`` are the shell's, not the command's."""
    import re

    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif re.fullmatch(r"\d*(>>?|<)", word):
            skip = True  # its target is the next word
        elif not re.match(r"\d*[<>]", word):
            kept.append(word)
    return kept


def takes_a_value(option) -> bool:  # type: ignore[no-untyped-def]
    """Whether a click option reads the next word as its value (not a flag, not a counter)."""
    return option is not None and not option.is_flag and not option.count


def unknown_options(words: list[str], group) -> list[str]:  # type: ignore[no-untyped-def]
    """The options in ``words`` (``audiopipe [GLOBAL] CMD [SUB...] ARGS``) that the command they are
    given to does not have, or a command name that does not exist ("no command NAME")."""
    import click

    command = group
    problems: list[str] = []
    rest = list(words[1:])
    while rest:
        word = rest.pop(0)
        if not word.startswith("-") or word == "-":
            if isinstance(command, click.Group):
                if word not in command.commands:
                    return [*problems, f"no command {word!r}"]
                command = command.commands[word]
            continue  # an argument
        name = word.split("=", 1)[0]
        options = {o: p for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
        options.update(dict.fromkeys(command.get_help_option_names(click.Context(command))))
        if name not in options and not name.startswith("--") and all(f"-{c}" in options for c in name[1:]):
            continue  # short flags bundled: -vv
        if name not in options:
            problems.append(f"{command.name} {name}")
        elif takes_a_value(options[name]) and "=" not in word and rest:
            rest.pop(0)  # its value
    return problems


# --- running the CLI ---------------------------------------------------------------------------------

# The installed console script: what a user (or cron) starts, for the tests that need a real process.
AUDIOPIPE = str(Path(sys.executable).with_name("audiopipe"))
# Variables that configure audiopipe or the API: a test starts from none of the caller's.
OWN_PREFIXES = ("LANCEPILOT_", "AUDIOPIPE_", "XDG_")


def clean_environ(*, drop: tuple[str, ...] = OWN_PREFIXES, **values: str) -> dict[str, str]:
    """This process's environment less every variable starting with one of ``drop``, plus ``values``:
    what a user's shell with no audiopipe settings would pass on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(values)
    return env


def invoke(args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
           stdin: bytes | str = b"", text: bool = True) -> subprocess.CompletedProcess[Any]:
    """``audiopipe ARGS`` run in this process by click's CliRunner, seen as a subprocess would be: ``env``
    is the whole environment of the call (None: this process's), ``cwd`` its working folder, ``stdin``
    what it reads. Returns a CompletedProcess (``text=False``: bytes), so a test reads either the same.

    Much quicker than a subprocess (no interpreter to start), and counted by coverage. What the CLI sets
    in the process is put back afterwards: the environment, the working folder, the temp folder Python
    chose (it follows ``TMPDIR``), the "audiopipe" logger's handlers, the SIGINT/SIGTERM handlers. An
    exception the CLI let through is printed as Python would (a traceback on stderr, exit 1). Signals,
    terminals and crashes need a real process: :data:`AUDIOPIPE`."""
    from click.testing import CliRunner

    from audiopipe import runner
    from audiopipe.cli import cli

    saved_environ, saved_cwd, saved_tempdir = dict(os.environ), os.getcwd(), tempfile.tempdir
    logger = logging.getLogger("audiopipe")
    saved_logger = (logger.handlers[:], logger.level, logger.propagate)
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        tempfile.tempdir = None  # chosen again from TMPDIR, as a new process would
        result = CliRunner().invoke(cli, list(args), input=stdin, prog_name="audiopipe")
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        os.chdir(saved_cwd)
        tempfile.tempdir = saved_tempdir
        logger.handlers[:], logger.level, logger.propagate = saved_logger
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
    assert not runner.stopping(), "the CLI took a signal's way out: run this test in a real process"
    stdout, stderr = result.stdout_bytes, result.stderr_bytes
    if result.exc_info is not None and result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info)).encode()
    if text:  # decoded as subprocess.run(text=True) does: universal newlines
        return subprocess.CompletedProcess([*args], result.exit_code, _text(stdout), _text(stderr))
    return subprocess.CompletedProcess([*args], result.exit_code, stdout, stderr)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
