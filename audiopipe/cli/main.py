"""The ``audiopipe`` group: its global options (--debug, -v, --version) and its commands, and
:func:`main`, the program. How a failed command ends is :mod:`audiopipe.cli.failures`; each command's
exit codes are :mod:`audiopipe.cli.exits`.
"""

from __future__ import annotations

import copy

import click

from audiopipe import __version__
from audiopipe.cli.commands.batch import batch_cmd
from audiopipe.cli.commands.db import db_group
from audiopipe.cli.commands.prepare import prepare_cmd, probe_cmd
from audiopipe.cli.commands.send import send_cmd
from audiopipe.cli.commands.setup import cache_cmd, doctor_cmd, sandbox_cmd
from audiopipe.cli.commands.status import resolve_cmd, resume_cmd, status_cmd
from audiopipe.cli.commands.worker import worker_cmd
from audiopipe.cli.console import setup_logging


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


def _hidden_alias(command: click.Command, name: str) -> click.Command:
    alias = copy.copy(command)
    alias.hidden = True
    alias.name = name
    return alias


for _command in (probe_cmd, prepare_cmd, send_cmd, batch_cmd, status_cmd, resolve_cmd, worker_cmd, resume_cmd, db_group,
                 cache_cmd, doctor_cmd, sandbox_cmd):
    cli.add_command(_command)
cli.add_command(_hidden_alias(doctor_cmd, "check"))


def main() -> None:
    """The ``audiopipe`` program (``python -m audiopipe``, the installed script)."""
    cli(prog_name="audiopipe")
