"""Every command teaches: --help works, shows examples that run as written, and names its options.

The commands are found by walking click's own objects, so a command added later is checked too.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from helpers import command_lines, unknown_options

from audiopipe.cli import cli


def walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of every command and subcommand under ``group`` (``("batch",)``...)."""
    found = []
    for name, command in sorted(group.commands.items()):
        if command.hidden:  # an alias (check = doctor): its help is the command's own
            continue
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += walk(command, (*path, name))
    return found


COMMANDS = walk(cli)
EVERY = [(), *COMMANDS]  # the group itself first


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="audiopipe")
    assert result.exit_code == 0, result.output
    return result.output


def examples(text: str) -> str:
    """The "Examples:" paragraph of a help text (its indented lines up to the next blank one)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Examples:"), None)
    if start is None:
        return ""
    block = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        block.append(line)
    return "\n".join(block)


def test_every_command_is_listed() -> None:
    assert {p[0] for p in COMMANDS} >= {"probe", "prepare", "send", "batch", "status", "sandbox", "cache"}
    out = help_text(())
    for (name,) in (p for p in COMMANDS if len(p) == 1):
        assert f"  {name} " in out


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_command_help(path: tuple[str, ...]) -> None:
    out = help_text(path)
    assert out.startswith(f"Usage: audiopipe {' '.join(path)}")
    command = command_at(path)
    assert len((command.help or "").split()) >= 12, f"{path}: the help should say what it does and how"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"


@pytest.mark.parametrize("path", EVERY, ids=lambda p: " ".join(p) or "audiopipe")
def test_every_command_shows_examples_of_itself(path: tuple[str, ...]) -> None:
    block = examples(help_text(path))
    assert block, f"'audiopipe {' '.join(path)} --help' has no Examples: paragraph"
    invocations = command_lines(block)
    assert invocations, f"no 'audiopipe ...' line among the examples:\n{block}"
    if path:
        used = [w for w in invocations if [x for x in w[1:] if not x.startswith("-")][:len(path)] == list(path)]
        assert used, f"no example runs 'audiopipe {' '.join(path)}':\n{block}"


@pytest.mark.parametrize("path", EVERY, ids=lambda p: " ".join(p) or "audiopipe")
def test_examples_name_only_options_that_exist(path: tuple[str, ...]) -> None:
    for words in command_lines(examples(help_text(path))):
        assert unknown_options(words, cli) == [], " ".join(words)


def test_the_option_checker_finds_what_is_wrong() -> None:
    """The check above would pass on nothing if the parsing found no options: show it catches some."""
    text = ("audiopipe prepare a.wav --out ready/ --fromat mp3\n"
            "X=1 audiopipe send t.wav -w W -c C --jsn | jq .\n"
            "audiopipe frobnicate\n"
            "audiopipe -vv --debug batch d --contacts c.csv --quiet \\\n    --report r.csv 2>&1\n")
    found = [unknown_options(words, cli) for words in command_lines(text)]
    assert found == [["prepare --fromat"], ["send --jsn"], ["no command 'frobnicate'"], []]


@pytest.mark.parametrize("name", ["prepare", "send", "batch", "status"])
def test_commands_that_can_fail_document_their_exit_status(name: str) -> None:
    assert "Exit status" in (cli.commands[name].help or "")
