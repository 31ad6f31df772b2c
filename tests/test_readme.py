"""What the README says holds: the commands and options it shows exist, where it says --json and
--quiet are they are, the report has the columns it lists, the statuses and settings it names are
the code's. Each claim is parsed out of README.md, so an edit on either side that breaks it fails."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from helpers import command_lines, unknown_options

from audiopipe.cli import cli

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
PROSE = " ".join(README.split())  # line breaks fall anywhere in a paragraph
TOKEN = "readme-test-token"
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
CONTACT = "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21"


# "Measured" names the benchmarks' own options (bench/README.md documents them)
USER_PART = re.sub(r"^## Measured\n.*?(?=^## )", "", README, flags=re.M | re.S)


def code_blocks(language: str | None = None, text: str = README) -> list[str]:
    """The fenced blocks of the README (of one language, e.g. ``sh``)."""
    return [body for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
            if language is None or lang == language]


def inline_code() -> list[str]:
    prose = re.sub(r"^```.*?^```", "", USER_PART, flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def shell_text() -> str:
    """Everything a reader may type: shell and cron blocks, and inline code."""
    return "\n".join(code_blocks("sh", USER_PART) + code_blocks("cron", USER_PART) + inline_code())


def commands_with(option: str) -> set[str]:
    return {name for name, command in cli.commands.items() if not command.hidden
            and any(option in p.opts for p in command.params if isinstance(p, click.Option))}


def every_option() -> set[str]:
    found = {o for p in cli.params if isinstance(p, click.Option) for o in p.opts} | {"--help", "-h"}
    for command in cli.commands.values():
        found |= {o for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
    return found


def test_every_command_line_in_the_readme_runs_as_written() -> None:
    lines = command_lines(shell_text())
    assert len(lines) >= 10  # the parsing found them
    problems = {" ".join(words): unknown_options(words, cli) for words in lines}
    assert {k: v for k, v in problems.items() if v} == {}


def test_every_option_the_readme_names_exists() -> None:
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", shell_text()))
    assert {"--json", "--quiet", "--report", "--retry-unknown"} <= named
    assert named - every_option() == set()


def test_the_command_list_is_every_command() -> None:
    using_it = README.split("## Using it", 1)[1]
    listed = {words[1] for words in command_lines(code_blocks_in(using_it)[0])}
    assert listed == {name for name, command in cli.commands.items() if not command.hidden}


def code_blocks_in(text: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```", text, re.M | re.S)


@pytest.mark.parametrize("option", ["--json", "--quiet"])
def test_json_and_quiet_are_where_the_readme_says(option: str) -> None:
    said = re.search(rf"`{option}` \(([a-z, ]+)\)", PROSE)
    assert said, f"the README should say which commands take {option}"
    assert set(said.group(1).split(", ")) == commands_with(option)


def test_debug_and_verbose_go_before_the_command_as_the_readme_says() -> None:
    assert "`--debug` and `-v` go before the command (`audiopipe --debug batch ...`)" in PROSE
    group_options = {o for p in cli.params for o in getattr(p, "opts", [])}
    assert {"--debug", "-v"} <= group_options


def test_the_report_statuses_are_the_batchs() -> None:
    from audiopipe.campaign.batch import STATUSES

    said = re.search(r"Status is (.*?)\. A CSV column", PROSE)
    assert said
    assert set(re.findall(r"`(\w+)`", said.group(1))) == set(STATUSES)


def test_the_settings_the_readme_lists_are_the_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    import audiopipe
    from audiopipe.errors import ToolMissingError
    from audiopipe.runner import find_tool

    table = README.split("### Configuration", 1)[1].split("###", 1)[0]
    listed = set(re.findall(r"\b((?:AUDIOPIPE|LANCEPILOT)_[A-Z_]+)", table))
    source = "\n".join(p.read_text() for p in Path(audiopipe.__file__).parent.rglob("*.py"))
    in_code = set(re.findall(r"(?<![\w])((?:AUDIOPIPE|LANCEPILOT)_[A-Z_]+)", source))
    assert in_code - listed == set(), "read by the code, missing from the README's table"
    for name in listed - in_code:  # built at run time: AUDIOPIPE_<TOOL>
        tool = name.removeprefix("AUDIOPIPE_").lower()
        monkeypatch.setenv(name, "/nonexistent/tool")
        with pytest.raises(ToolMissingError, match=name):
            find_tool(tool)


def test_the_python_examples_import() -> None:
    block = code_blocks("python")[0]
    imports = "\n".join(line for line in block.splitlines() if line.startswith(("from ", "import ")))
    assert imports.count("import") >= 3
    exec(compile(imports, "README.md", "exec"), {})  # noqa: S102 - the README's own import lines, run to prove they import


def test_the_report_has_the_columns_the_readme_lists(tmp_path: Path, make_sandbox, audio_dir: Path) -> None:  # type: ignore[no-untyped-def]
    said = re.search(r"`--report` writes one row per [^:]*: `([^`]+)`", PROSE)
    assert said
    listed = [c.strip() for c in said.group(1).split(",")]
    sb = make_sandbox(token=TOKEN)
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(audio_dir / "voice.opus", folder / "voice.opus")  # sent as it is: no encode
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(f"contact,note\n{CONTACT},first\n", encoding="utf-8")
    report = tmp_path / "report.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANCEPILOT_", "AUDIOPIPE_"))}
    env.update(LANCEPILOT_TOKEN=TOKEN, LANCEPILOT_BASE_URL=sb.url, AUDIOPIPE_SETTLE="0",
               AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path), TMPDIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "audiopipe", "batch", str(folder), "--contacts", str(contacts),
                          "-w", WS, "--state", str(tmp_path / "ledger.sqlite3"), "--report", str(report)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    with report.open(newline="", encoding="utf-8") as f:
        header, row = list(csv.reader(f))
    assert header == [*listed, "note"]  # then the CSV's own columns
    assert dict(zip(header, row, strict=True))["status"] == "sent"


PROJECT = Path(__file__).parent.parent
SOURCES = [p for folder in ("audiopipe", "tests", "docs", "fixtures", "bench", "deploy")
           for p in (PROJECT / folder).rglob("*")
           if p.suffix in (".py", ".md", ".txt", ".csv", ".service", ".timer", ".example")
           and "__pycache__" not in p.parts] + \
          [PROJECT / "README.md", PROJECT / "Makefile", PROJECT / "pyproject.toml"]


def test_the_project_cites_only_itself() -> None:
    # the brief's own folder and its files by name (split: this file is scanned too); not a bare word, since
    # SQL's REFERENCES is a keyword the schema needs
    names = ["REFER" + "ENCE", "SCA" + "LE", "STY" + "LE", "LAYOUT-" + "SKETCH"]
    outside = re.compile("|".join(["\\.\\./" + "shared", *(n + "\\.md" for n in names)]))
    found = [f"{p.relative_to(PROJECT)}:{n}" for p in SOURCES
             for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if outside.search(line)]
    assert found == []


def test_every_docs_citation_names_a_section_that_exists() -> None:
    sections = set(re.findall(r"^## §(\d+) ", (PROJECT / "docs" / "api.md").read_text(encoding="utf-8"), re.M))
    cited = {}
    for p in SOURCES:
        for first, last in re.findall(r"docs/api\.md`?\)? §(\d+)(?:-(\d+))?", p.read_text(errors="replace")):
            for n in range(int(first), int(last or first) + 1):
                cited.setdefault(str(n), p.name)
    assert len(cited) >= 4  # the code cites §1, §2, §5, §6
    assert {n: where for n, where in cited.items() if n not in sections} == {}
