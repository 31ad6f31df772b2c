"""Where the token comes from, and tokens that could never go in a header."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiopipe.client import LancepilotClient, load_token
from audiopipe.errors import AuthError, UsageError

TOKEN = "token-test"


def test_a_token_file_given_explicitly_wins_over_the_environment(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    monkeypatch.setenv("LANCEPILOT_TOKEN", "from-env")
    assert load_token(None, f) == ("from-file", f"the token file {f}")
    assert load_token(None, None) == ("from-env", "LANCEPILOT_TOKEN")
    assert load_token("given", f)[0] == "given"


def test_token_file_from_environment(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "tok"
    f.write_text("abc123")
    monkeypatch.delenv("LANCEPILOT_TOKEN", raising=False)
    monkeypatch.setenv("LANCEPILOT_TOKEN_FILE", str(f))
    token, source = load_token()
    assert token == "abc123" and "LANCEPILOT_TOKEN_FILE" in source


@pytest.mark.parametrize("bad", ["tok\u200bxyz", "tökén", "two words", "tab\there", "emoji\U0001F600"])
def test_tokens_that_cannot_be_a_header_are_refused_up_front(bad: str, monkeypatch) -> None:
    monkeypatch.setenv("LANCEPILOT_TOKEN", bad)
    with pytest.raises(UsageError) as err:
        load_token()
    assert "LANCEPILOT_TOKEN" in str(err.value) and bad not in str(err.value)


def test_empty_token_file_says_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LANCEPILOT_TOKEN", raising=False)
    f = tmp_path / "empty"
    f.write_text("  \n")
    with pytest.raises(UsageError, match="is empty"):
        load_token(None, f)


def test_401_names_where_the_token_came_from(tmp_path: Path, make_sandbox, audio_dir: Path) -> None:
    sb = make_sandbox()
    f = tmp_path / "wrong-token"
    f.write_text("not-the-token")
    with LancepilotClient(base_url=sb.url, token_file=f) as client:
        with pytest.raises(AuthError) as err:
            client.send_audio("0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01", "5f0c3a6e-1b2d-4e8f-9a7b-0c1d2e3f4a51",
                              audio_dir / "tone.mp3")
    assert str(f) in str(err.value)
    assert sb.request_count == 1
