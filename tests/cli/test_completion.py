"""Shell completion, as the README sets it up: click's scripts for bash, zsh and fish, and the
completions they ask audiopipe for. bash runs the script for real; zsh and fish may not be
installed, so their side is checked through the same protocol their scripts use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PROJECT

AUDIOPIPE = [sys.executable, "-m", "audiopipe"]
BIN = Path(sys.executable).parent  # where the 'audiopipe' script of this install lives

MARKERS = {
    "bash": "complete -o nosort -F _audiopipe_completion audiopipe",
    "zsh": "compdef _audiopipe_completion audiopipe",
    "fish": "complete --no-files --command audiopipe",
}


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(AUDIOPIPE, env={**os.environ, **env}, capture_output=True, text=True, timeout=30)


README = (PROJECT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("shell", sorted(MARKERS))
def test_the_readme_shows_how_to_set_it_up(shell: str) -> None:
    assert f"_AUDIOPIPE_COMPLETE={shell}_source audiopipe" in README


@pytest.mark.parametrize("shell", sorted(MARKERS))
def test_the_completion_script_is_produced(shell: str) -> None:
    out = run({"_AUDIOPIPE_COMPLETE": f"{shell}_source"})
    assert out.returncode == 0, out.stderr
    assert MARKERS[shell] in out.stdout
    assert f"_AUDIOPIPE_COMPLETE={shell}_complete" in out.stdout  # what it calls back


def bash_completes(script: str, line: str) -> list[str]:
    """What bash offers for ``line`` (ending where TAB is pressed) once ``script`` is sourced."""
    words = line.split(" ")
    program = f"""
source /dev/stdin <<'SCRIPT'
{script}
SCRIPT
COMP_WORDS=({" ".join(f"'{w}'" for w in words)})
COMP_CWORD={len(words) - 1}
_audiopipe_completion audiopipe
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [w for w in out.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None or not (BIN / "audiopipe").exists(),
                    reason="needs bash and the installed audiopipe script")
def test_bash_completes_commands_options_and_choices() -> None:
    script = run({"_AUDIOPIPE_COMPLETE": "bash_source"}).stdout
    assert bash_completes(script, "audiopipe pre") == ["prepare"]
    assert sorted(bash_completes(script, "audiopipe batch --retry-")) == ["--retry-failed", "--retry-unknown"]
    assert bash_completes(script, "audiopipe prepare --format ") == ["ogg", "mp3", "m4a", "aac", "amr"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_get_the_same_answers(shell: str) -> None:
    # zsh's script passes the index of the word being completed, fish's the word itself
    out = run({"_AUDIOPIPE_COMPLETE": f"{shell}_complete", "COMP_WORDS": "audiopipe sta",
               "COMP_CWORD": "1" if shell == "zsh" else "sta"})
    assert out.returncode == 0, out.stderr
    if shell == "zsh":  # type, value, description: three lines each
        assert out.stdout.splitlines()[:2] == ["plain", "status"]
    else:
        assert out.stdout.splitlines()[0].startswith("plain,status")
