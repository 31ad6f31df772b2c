"""Every command teaches: --help works, shows an example or the exit codes, and names its options."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from audiopipe.cli import cli

COMMANDS = sorted(cli.commands)


def test_every_command_is_listed() -> None:
    assert set(COMMANDS) >= {"probe", "prepare", "send", "batch", "status", "sandbox", "cache"}
    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    for name in COMMANDS:
        assert name in out.output


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cli {name}") or result.output.startswith(f"Usage: audiopipe {name}")
    doc = cli.commands[name].help or ""
    assert len(doc.split()) >= 12, f"{name}: the help should say what it does and how"
    for param in cli.commands[name].params:
        if param.param_type_name == "option" and param.help is None and not param.hidden:
            assert param.name in ("help",), f"{name} --{param.name} has no help text"


@pytest.mark.parametrize("name", ["prepare", "send", "batch"])
def test_commands_that_can_fail_document_their_exit_status(name: str) -> None:
    assert "Exit status" in (cli.commands[name].help or "")
