"""The library's setting names as the command line spells them: ``max_size`` is ``--max-size``.

The library names a setting in its messages with :func:`audiopipe.errors.setting` and says which one an
error is about in its ``field``; the CLI shows that message with its flags (:func:`told`). Most flags
are the setting's name with dashes; :data:`FLAGS` lists those that are not. Messages about the command
line's own syntax (INPUT or --url, --delivered or --not-delivered) name the flags directly.
"""

from __future__ import annotations

from audiopipe.errors import AudiopipeError, named

FLAGS = {
    "out_dir": "--out",
    "state": "--state",
    "state_path": "--state",
    "contacts_csv": "--contacts",
    "report_path": "--report",
    "fmt": "--format",
    "cache": "--no-cache",      # PrepareSettings(cache=False) is --no-cache
    "data_dir": "--data",
    "file_name": "--file",
}


def flag(field: str) -> str:
    """The option that sets ``field`` (``max_size`` -> ``--max-size``)."""
    return FLAGS.get(field) or "--" + field.replace("_", "-")


def told(what: AudiopipeError | str) -> str:
    """An error's message (or a text that names settings) as the command line says it: with its flags."""
    if isinstance(what, AudiopipeError):
        return what.message(flag)
    return named(what, flag)
