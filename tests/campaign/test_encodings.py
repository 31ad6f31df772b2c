"""Contacts CSVs as spreadsheets save them: Excel's "Unicode text" (UTF-16, tab-separated, with or
without its BOM), its plain "CSV" (the Windows code page: cp1252 in the west, Latin-1 alike) and
"CSV UTF-8". Each is read, the accents in its names reach the report intact, and a file that is
not text at all is one line. Files are written with Python's codecs; the batch is the real CLI."""

from __future__ import annotations

import codecs
import csv
from pathlib import Path

import pytest
from helpers import clean_environ, invoke

from audiopipe.campaign.contacts import read_contacts
from audiopipe.errors import UsageError

pytestmark = pytest.mark.timeout(120)

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
PEOPLE = ["5f0c3a6e-1b2d-4e8f-9a7b-0c1d2e3f4a51", "8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c52",
          "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e53"]
NAMES = ["José Müller", "Zoë Brontë", "François Lefèvre"]


def table(delimiter: str = ",", names: list[str] = NAMES) -> str:
    rows = [f"contact{delimiter}name{delimiter}file"]
    # fewer names than PEOPLE: fewer rows
    rows += [f"{p}{delimiter}{n}{delimiter}tone.mp3" for p, n in zip(PEOPLE, names, strict=False)]
    return "\r\n".join(rows) + "\r\n"  # Excel ends lines so


# (how it is written, the delimiter Excel uses for it)
SAVED_AS = {
    "utf-16-le with BOM (Unicode text)": (lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"), "\t"),
    "utf-16-be with BOM": (lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"), "\t"),
    "utf-16-le without BOM": (lambda t: t.encode("utf-16-le"), "\t"),
    "utf-16-be without BOM": (lambda t: t.encode("utf-16-be"), ","),
    "cp1252 (CSV, western Windows)": (lambda t: t.encode("cp1252"), ";"),
    "latin-1": (lambda t: t.encode("latin-1"), ","),
    "utf-8 with BOM (CSV UTF-8)": (lambda t: codecs.BOM_UTF8 + t.encode("utf-8"), ","),
    "utf-8": (lambda t: t.encode("utf-8"), ","),
}


@pytest.fixture
def folder(tmp_path: Path, audio_dir: Path) -> Path:
    f = tmp_path / "rec"
    f.mkdir()
    (f / "tone.mp3").write_bytes((audio_dir / "tone.mp3").read_bytes())
    return f


@pytest.mark.parametrize("saved_as", list(SAVED_AS))
def test_each_encoding_is_read_with_its_accents(saved_as: str, tmp_path: Path, folder: Path) -> None:
    encode, delimiter = SAVED_AS[saved_as]
    path = tmp_path / "contacts.csv"
    path.write_bytes(encode(table(delimiter)))
    cl = read_contacts(path, folder, default_workspace=WS)
    assert cl.invalid == ()
    assert [r.contact for r in cl.rows] == PEOPLE
    assert [r.extra["name"] for r in cl.rows] == NAMES
    assert [r.file_label for r in cl.rows] == ["tone.mp3"] * 3


def test_windows_only_characters_of_cp1252_are_read(tmp_path: Path, folder: Path) -> None:
    """Bytes 0x80-0x9f: the euro sign and typographic quotes that Latin-1 does not have."""
    names = ["“Café” – 5 €", "Œuvre … ™", "Ana"]
    path = tmp_path / "contacts.csv"
    path.write_bytes(table(";", names).encode("cp1252"))
    assert [r.extra["name"] for r in read_contacts(path, folder, default_workspace=WS).rows] == names


@pytest.mark.parametrize("names", [["André €uro"], ["José", "André €uro", "Zoë"]])
def test_a_short_western_list_with_the_euro_sign_is_cp1252(names: list[str], tmp_path: Path, folder: Path) -> None:
    """Found by a new-user trial: one such name was taken for the Baltic cp775 ("Andrķ Ćuro")."""
    path = tmp_path / "contacts.csv"
    path.write_bytes(table(",", names).encode("cp1252"))
    assert [r.extra["name"] for r in read_contacts(path, folder, default_workspace=WS).rows] == names


@pytest.mark.parametrize("names, code_page", [
    (["Zoë Łukasz", "Świątek"], "cp1250"),
    (["Μαρία Παπαδοπούλου", "Γιώργος Νικολάου", "Ελένη Κωνσταντίνου"], "cp1253"),
])
def test_central_european_and_greek_code_pages_are_not_taken_for_cp1252(
        names: list[str], code_page: str, tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(table(",", names).encode(code_page))
    assert [r.extra["name"] for r in read_contacts(path, folder, default_workspace=WS).rows] == names


def test_another_code_page_is_read_and_said_to_be_a_guess(tmp_path: Path, folder: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    names = ["Иван Петров", "Мария Сидорова", "Сергей"]
    path = tmp_path / "contacts.csv"
    path.write_bytes(table(",", names).encode("cp1251"))
    with caplog.at_level("INFO", logger="audiopipe"):
        cl = read_contacts(path, folder, default_workspace=WS)
    assert [r.extra["name"] for r in cl.rows] == names and cl.encoding == "cp1251"
    assert any(r.levelname == "WARNING" and "a guess" in r.getMessage() for r in caplog.records)


def test_a_stray_nul_in_utf8_stays_utf8_and_its_row_is_reported(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(table().replace("Zoë", "Zo\x00ë").encode("utf-8"))
    cl = read_contacts(path, folder, default_workspace=WS)
    assert cl.encoding == "UTF-8" and [r.extra["name"] for r in cl.rows] == [NAMES[0], NAMES[2]]
    assert len(cl.invalid) == 1 and "NUL" in cl.invalid[0].reason


@pytest.mark.parametrize("content, kind", [(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8, "not text"),
                                           (b"PK\x03\x04" + bytes(range(256)) * 8, "a zip file"),
                                           (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 8,
                                            "an old Excel .xls workbook")])
def test_a_file_that_is_not_text_is_one_usage_error(content: bytes, kind: str, tmp_path: Path,
                                                    folder: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(content)
    with pytest.raises(UsageError) as err:
        read_contacts(path, folder, default_workspace=WS)
    assert str(err.value).startswith(f"{path} is {kind}") and "\n" not in str(err.value)


def test_a_broken_utf16_file_says_where(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + table().encode("utf-16-le") + b"\x00\xd8")  # a lone surrogate
    with pytest.raises(UsageError, match=r"begins as UTF-16 text but byte \d+ .* is not UTF-16"):
        read_contacts(path, folder, default_workspace=WS)


@pytest.mark.parametrize("saved_as", ["utf-16-le with BOM (Unicode text)", "utf-16-le without BOM",
                                      "cp1252 (CSV, western Windows)"])
def test_accents_survive_into_the_report(saved_as: str, tmp_path: Path, folder: Path, make_sandbox) -> None:
    encode, delimiter = SAVED_AS[saved_as]
    csv_path = tmp_path / "contacts.csv"
    csv_path.write_bytes(encode(table(delimiter)))
    sb = make_sandbox(token="enc-token")
    report = tmp_path / "report.csv"
    env = clean_environ(HOME=str(tmp_path), AUDIOPIPE_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path),
                        AUDIOPIPE_SETTLE="0", LANCEPILOT_TOKEN="enc-token", LANCEPILOT_BASE_URL=sb.url)
    proc = invoke(["batch", str(folder), "--contacts", str(csv_path), "-w", WS, "--quiet",
                   "--state", str(tmp_path / "ledger.sqlite3"), "--report", str(report)], env=env)
    assert proc.returncode == 0, proc.stderr
    with open(report, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    expected = [(p, n, "sent") for p, n in zip(PEOPLE, NAMES, strict=True)]
    assert [(r["contact"], r["name"], r["status"]) for r in rows] == expected
    assert sorted(m["contact_id"] for m in sb.messages()) == sorted(PEOPLE)
