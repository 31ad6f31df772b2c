"""The ``audiopipe`` group: its global options (--debug, -v, --version) and its commands, and
:func:`main`, the program. How a failed command ends is :mod:`audiopipe.cli.failures`; each command's
exit codes are :mod:`audiopipe.cli.exits`.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterator, MutableMapping

import click

from audiopipe import __version__
from audiopipe.cli.console import setup_logging

# Each command by name: its module under audiopipe.cli.commands, its function there, whether hidden.
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "probe": ("prepare", "probe_cmd", False), "prepare": ("prepare", "prepare_cmd", False),
    "send": ("send", "send_cmd", False), "batch": ("batch", "batch_cmd", False),
    "status": ("status", "status_cmd", False), "resolve": ("status", "resolve_cmd", False),
    "resume": ("status", "resume_cmd", False), "worker": ("worker", "worker_cmd", False),
    "db": ("db", "db_group", False), "cache": ("setup", "cache_cmd", False),
    "doctor": ("setup", "doctor_cmd", False), "sandbox": ("setup", "sandbox_cmd", False),
    "check": ("setup", "doctor_cmd", True),
}


class LazyCommands(MutableMapping[str, click.Command]):
    """The group's commands, each imported the first time it is asked for: a ``prepare`` then does
    not load the sending side (HTTP, the ledgers), which is most of the start-up's CPU time."""

    def __init__(self, where: dict[str, tuple[str, str, bool]]) -> None:
        self._where = dict(where)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, attribute, hidden = self._where[name]
            command = getattr(importlib.import_module(f"audiopipe.cli.commands.{module}"), attribute)
            self._loaded[name] = _hidden_alias(command, name) if hidden else command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command
        self._where.setdefault(name, ("", "", command.hidden))

    def __delitem__(self, name: str) -> None:
        del self._where[name]
        self._loaded.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _hidden_alias(command: click.Command, name: str) -> click.Command:
    alias = copy.copy(command)
    alias.hidden = True
    alias.name = name
    return alias


@click.group(commands=LazyCommands(COMMANDS),
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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



def main() -> None:
    """The ``audiopipe`` program (``python -m audiopipe``, the installed script)."""
    cli(prog_name="audiopipe")
