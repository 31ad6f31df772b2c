"""``--send-by``, ``--url-ttl`` and ``--public-url`` through the real CLI: a mistake is one line and exit 2
before anything is prepared or sent; ``send FILE --send-by url`` puts the prepared file into the store
and sends its URL (fetched by the sandbox), printing the message id and never the URL; a presigned
lifetime under a day is said."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import clean_environ, contacts_for, invoke, write_contacts
from http_folder import serve_folder

pytestmark = pytest.mark.timeout(60)
TOKEN = "send-by-cli-token"
WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"


def cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    proc = invoke(args, env=clean_environ(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"),
                                          AUDIOPIPE_SETTLE="0", LANCEPILOT_TOKEN=TOKEN,
                                          AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache")))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def recording(tmp_path: Path, audio_dir: Path) -> Path:
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(audio_dir / "tone.wav", folder / "talk.wav")
    return folder


@pytest.mark.parametrize(("flags", "said"), [
    (("--public-url", "https://cdn.example"), "--url-ttl and --public-url are for --send-by url"),
    (("--url-ttl", "2d"), "--url-ttl and --public-url are for --send-by url"),
    (("--send-by", "url"), "--send-by url needs --store"),
    (("--send-by", "url", "--store", "STORE"), "gives no URL"),
    (("--send-by", "url", "--store", "STORE", "--public-url", "http://cdn.example"), "--public-url must be https"),
    (("--send-by", "url", "--store", "STORE", "--url-ttl", "soon"), "is not a duration"),
])
def test_a_wrong_url_setting_is_one_line_and_exit_2_before_any_work(recording, tmp_path, make_sandbox, flags, said):
    sb = make_sandbox(token=TOKEN)
    contacts = write_contacts(tmp_path / "contacts.csv", contacts_for(2))
    flags = tuple(str(tmp_path / "store") if f == "STORE" else f for f in flags)
    done = cli("batch", str(recording), "--contacts", str(contacts), "-w", WS, "--base-url", sb.url, *flags,
               tmp_path=tmp_path)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert sb.request_count == 0 and not (tmp_path / "cache").exists()  # nothing checked, prepared or sent


def test_send_a_file_by_url_puts_it_once_and_prints_only_the_id(recording, tmp_path, make_sandbox):
    sb = make_sandbox(token=TOKEN)
    contact = contacts_for(1)[0]
    with serve_folder(tmp_path / "store") as served:
        done = cli("send", str(recording / "talk.wav"), "-w", WS, "-c", contact, "--base-url", sb.url,
                   "--send-by", "url", "--store", str(tmp_path / "store"), "--public-url", served.url, "--json",
                   tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        assert sum(served.gets.values()) == 1  # the sandbox fetched it from the store
    [message] = sb.messages()
    [stored] = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert message["contact_id"] == contact and message["size"] == stored.stat().st_size
    assert f'"object_key": "{stored.name}"' in done.stdout and '"sent_by": "url"' in done.stdout
    assert f"{served.url}/" not in done.stderr  # the (public) URL is the server's to echo, not audiopipe's to say


def test_a_presigned_lifetime_under_a_day_is_said(recording, tmp_path, make_sandbox, s3_spec):
    sb = make_sandbox(token=TOKEN)
    done = cli("send", str(recording / "talk.wav"), "-w", WS, "-c", contacts_for(1)[0], "--base-url", sb.url,
               "--send-by", "url", "--store", s3_spec, "--url-ttl", "10m", "--json", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warning: --url-ttl 10m" in done.stderr and "X-Amz-Signature" not in done.stdout + done.stderr
    assert len(sb.messages()) == 1 and sb.messages()[0]["mime"].startswith("audio/")
