"""The contacts CSV reader: encodings, delimiters, header aliases, extra columns, and every bad row
reported with its line number while the others go on. Real files in tmp_path and the committed
fixtures/contacts/*.csv; nothing is mocked."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from audiopipe.campaign.contacts import read_contacts, safe_path
from audiopipe.errors import UsageError

WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"
OTHER_WS = "7c1d9e2a-4b3f-4a5e-9c8d-1e2f3a4b5c6d"
C = [str(uuid.UUID(int=0x5EED0000 + i, version=4)) for i in range(8)]


@pytest.fixture
def folder(tmp_path: Path, audio_dir: Path) -> Path:
    """A batch folder with two real recordings (and a subfolder)."""
    f = tmp_path / "rec"
    (f / "sub").mkdir(parents=True)
    shutil.copy(audio_dir / "tone.mp3", f / "a.mp3")
    shutil.copy(audio_dir / "voice.opus", f / "sub" / "b.opus")
    return f


def write(tmp_path: Path, text: str, name: str = "contacts.csv", *, bom: bool = False,
          encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return p


# --- encodings and delimiters ------------------------------------------------------------------

@pytest.mark.parametrize("bom", [False, True], ids=["no-bom", "bom"])
@pytest.mark.parametrize("delim", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_delimiters_and_bom(tmp_path, folder, delim, bom):
    d = delim
    text = (f"contact{d}workspace{d}file{d}name\n"
            f"{C[0]}{d}{WS}{d}a.mp3{d}Alice\n"
            f"{C[1]}{d}{OTHER_WS}{d}sub/b.opus{d}Bob\n")
    cl = read_contacts(write(tmp_path, text, bom=bom), folder)
    assert [(r.line, r.contact, r.workspace, r.file_label) for r in cl.rows] == [
        (2, C[0], WS, "a.mp3"), (3, C[1], OTHER_WS, "sub/b.opus")]
    assert cl.rows[0].file == (folder / "a.mp3").resolve()
    assert cl.rows[1].file == (folder / "sub" / "b.opus").resolve()
    assert cl.has_file_column
    assert cl.extra_columns == ("name",)  # the BOM never sticks to the first header
    assert [r.extra for r in cl.rows] == [{"name": "Alice"}, {"name": "Bob"}]
    assert cl.invalid == ()


def test_semicolon_cells_holding_commas_keep_them(tmp_path, folder):
    # Every row has exactly one ',' and one ';': the reader must still split on ';'.
    text = "contact;name\n" + "".join(f"{c};Doe, John\n" for c in C[:4])
    cl = read_contacts(write(tmp_path, text), folder, default_workspace=WS)
    assert [r.contact for r in cl.rows] == C[:4]
    assert {r.extra["name"] for r in cl.rows} == {"Doe, John"}


def test_single_row_and_single_column_files(tmp_path, folder):
    one = read_contacts(write(tmp_path, f"contact;name\n{C[0]};Doe\n", "one.csv"), folder, default_workspace=WS)
    assert [(r.contact, r.extra) for r in one.rows] == [(C[0], {"name": "Doe"})]
    single = read_contacts(write(tmp_path, "id\n" + "\n".join(C[:3]) + "\n", "single.csv"), folder,
                           default_workspace=WS)
    assert [r.contact for r in single.rows] == C[:3]
    assert not single.has_file_column and single.extra_columns == ()


def test_crlf_line_ends_and_blank_lines(tmp_path, folder):
    text = f"contact,name\r\n{C[0]},A\r\n\r\n{C[1]},B\r\n,\r\n"
    cl = read_contacts(write(tmp_path, text), folder, default_workspace=WS)
    assert [(r.line, r.contact) for r in cl.rows] == [(2, C[0]), (4, C[1])]
    assert cl.invalid == ()  # blank (or all-empty) lines are not rows


def test_fixture_semicolon_bom_reads_like_per_row(fixtures_dir, audio_dir):
    a = read_contacts(fixtures_dir / "contacts" / "per_row.csv", audio_dir)
    b = read_contacts(fixtures_dir / "contacts" / "semicolon_bom.csv", audio_dir)
    assert len(a.rows) == 5 and a.invalid == ()
    assert [(r.line, r.contact, r.workspace, r.file, r.extra) for r in a.rows] == \
           [(r.line, r.contact, r.workspace, r.file, r.extra) for r in b.rows]
    assert a.extra_columns == b.extra_columns == ("note",)
    assert a.rows[1].extra["note"] == "reminder, with a comma"
    assert a.rows[3].extra["note"].startswith("=")


def test_fixture_broadcast(fixtures_dir, audio_dir):
    cl = read_contacts(fixtures_dir / "contacts" / "broadcast.csv", audio_dir, default_workspace=WS)
    assert len(cl.rows) == 3 and not cl.has_file_column
    assert all(r.file is None and r.workspace == WS for r in cl.rows)
    assert [r.extra["name"] for r in cl.rows] == ["Alice Example", "Bob Example", "Carol Example"]


# --- headers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("contact_h", ["contact", "contact_id", "id", "Contact ID", "CONTACT"])
@pytest.mark.parametrize("ws_h", ["workspace", "workspace_id", "Workspace-ID"])
@pytest.mark.parametrize("file_h", ["file", "audio", "path"])
def test_header_aliases(tmp_path, folder, contact_h, ws_h, file_h):
    text = f"{contact_h},{ws_h},{file_h}\n{C[0]},{WS},a.mp3\n"
    cl = read_contacts(write(tmp_path, text), folder)
    assert [(r.contact, r.workspace, r.file_label) for r in cl.rows] == [(C[0], WS, "a.mp3")]
    assert cl.extra_columns == ()


def test_uuids_are_normalised(tmp_path, folder):
    text = f"contact,workspace\n  {C[0].upper()} ,{{{WS.upper()}}}\n"
    cl = read_contacts(write(tmp_path, text), folder)
    assert [(r.contact, r.workspace) for r in cl.rows] == [(C[0], WS)]


def test_workspace_column_wins_over_default_and_empty_cell_takes_default(tmp_path, folder):
    text = f"contact,workspace\n{C[0]},{OTHER_WS}\n{C[1]},\n"
    cl = read_contacts(write(tmp_path, text), folder, default_workspace=WS)
    assert [(r.contact, r.workspace) for r in cl.rows] == [(C[0], OTHER_WS), (C[1], WS)]


def test_extra_columns_are_carried_in_order(tmp_path, folder):
    text = f"name,contact,city,note\nAnn,{C[0]},Oslo,\"a, b\"\nBen,{C[1]},Rome\n"
    cl = read_contacts(write(tmp_path, text), folder, default_workspace=WS)
    assert cl.extra_columns == ("name", "city", "note")
    assert cl.rows[0].extra == {"name": "Ann", "city": "Oslo", "note": "a, b"}
    assert cl.rows[1].extra == {"name": "Ben", "city": "Rome", "note": ""}  # a short row


def test_no_contact_column_is_a_usage_error(tmp_path, folder):
    with pytest.raises(UsageError, match="no contact column"):
        read_contacts(write(tmp_path, f"phone,name\n{C[0]},A\n"), folder, default_workspace=WS)


def test_no_workspace_anywhere_is_a_usage_error(tmp_path, folder):
    with pytest.raises(UsageError, match="no workspace"):
        read_contacts(write(tmp_path, f"contact\n{C[0]}\n"), folder)


def test_bad_default_workspace_is_a_usage_error(tmp_path, folder):
    with pytest.raises(UsageError, match="not a UUID"):
        read_contacts(write(tmp_path, f"contact\n{C[0]}\n"), folder, default_workspace="nope")


@pytest.mark.parametrize("text", ["", "\n\n", "   \n"])
def test_empty_file_is_a_usage_error(tmp_path, folder, text):
    with pytest.raises(UsageError, match="empty"):
        read_contacts(write(tmp_path, text), folder, default_workspace=WS)


def test_missing_csv_is_a_usage_error(tmp_path, folder):
    with pytest.raises(UsageError, match="cannot read"):
        read_contacts(tmp_path / "absent.csv", folder, default_workspace=WS)


def test_latin1_is_read_not_refused(tmp_path, folder):
    # once refused as "not UTF-8"; tests/campaign/test_encodings.py covers the encodings spreadsheets write
    text = f"contact,name\n{C[0]},Ann\n{C[1]},Jos\u00e9\n"
    cl = read_contacts(write(tmp_path, text, encoding="latin-1"), folder, default_workspace=WS)
    assert [r.extra["name"] for r in cl.rows] == ["Ann", "Jos\u00e9"]


def test_a_file_that_is_not_text_is_a_usage_error(tmp_path, folder, audio_dir):
    with pytest.raises(UsageError, match=r"tone\.wav is not text, not a CSV file"):
        read_contacts(audio_dir / "tone.wav", folder, default_workspace=WS)


# --- bad rows --------------------------------------------------------------------------------------

def test_fixture_bad_rows(fixtures_dir, audio_dir):
    cl = read_contacts(fixtures_dir / "contacts" / "bad_rows.csv", audio_dir, default_workspace=WS)
    assert [(r.line, r.file_label) for r in cl.rows] == [(6, "tone.mp3"), (7, "voice.opus")]
    reasons = {r.line: r.reason for r in cl.invalid}
    assert sorted(reasons) == [2, 3, 4, 5, 8]
    assert "not a UUID" in reasons[2]
    assert "does not exist" in reasons[3]
    assert ".." in reasons[4]
    assert "absolute" in reasons[5]
    assert "duplicate of line 6" in reasons[8]
    assert all(r.workspace == WS for r in cl.invalid[1:])  # the reported row still names its workspace


def test_every_kind_of_bad_row_is_reported_and_the_rest_go_on(tmp_path, folder):
    secret = tmp_path / "private.mp3"
    shutil.copy(folder / "a.mp3", secret)
    os.symlink(secret, folder / "escape.mp3")              # inside the folder, leads out
    os.symlink(folder / "a.mp3", folder / "inside.mp3")    # inside, stays inside: fine
    (folder / "adir").mkdir()
    rows = [
        (C[0], WS, "a.mp3"),             # 2 ok
        ("12345", WS, "a.mp3"),          # 3 bad contact
        (C[1], "not-a-ws", "a.mp3"),     # 4 bad workspace
        (C[2], WS, "missing.mp3"),       # 5 missing
        (C[3], WS, "../private.mp3"),    # 6 ..
        (C[3], WS, "sub/../../private.mp3"),  # 7 .. in the middle
        (C[4], WS, str(secret)),         # 8 absolute
        (C[4], WS, "C:\\x\\a.mp3"),      # 9 a Windows absolute path
        (C[5], WS, "escape.mp3"),        # 10 symlink out
        (C[0], WS, "a.mp3"),             # 11 exact duplicate of 2
        (C[6], WS, ""),                  # 12 empty file cell
        (C[6], WS, "adir"),              # 13 a folder, not a file
        ("", WS, "a.mp3"),               # 14 no contact
        (C[7], WS, "inside.mp3"),        # 15 ok
        (C[1], WS, "sub/b.opus"),        # 16 ok
    ]
    text = "contact,workspace,file\n" + "".join(",".join(r) + "\n" for r in rows)
    cl = read_contacts(write(tmp_path, text), folder)
    assert [(r.line, r.contact) for r in cl.rows] == [(2, C[0]), (15, C[7]), (16, C[1])]
    assert cl.rows[1].file == (folder / "a.mp3").resolve()
    reasons = {r.line: r.reason for r in cl.invalid}
    assert sorted(reasons) == list(range(3, 15))
    assert "not a UUID" in reasons[3] and "12345" in reasons[3]
    assert "workspace" in reasons[4] and "not a UUID" in reasons[4]
    assert "does not exist" in reasons[5]
    assert ".." in reasons[6] and ".." in reasons[7]
    assert "absolute" in reasons[8] and "absolute" in reasons[9]
    assert "outside the folder" in reasons[10]
    assert reasons[11] == "duplicate of line 2"
    assert "empty" in reasons[12]
    assert "does not exist" in reasons[13]
    assert reasons[14] == "no contact"
    bad = {r.line: r for r in cl.invalid}
    assert bad[10].file == "escape.mp3" and bad[10].contact == C[5]


def test_duplicate_in_broadcast_mode_and_across_case(tmp_path, folder):
    text = f"contact,name\n{C[0]},A\n{C[1]},B\n{C[0].upper()},A again\n"
    cl = read_contacts(write(tmp_path, text), folder, default_workspace=WS)
    assert [r.line for r in cl.rows] == [2, 3]
    assert [(r.line, r.reason, r.extra) for r in cl.invalid] == [(4, "duplicate of line 2", {"name": "A again"})]


def test_same_contact_other_file_or_workspace_is_not_a_duplicate(tmp_path, folder):
    text = f"contact,workspace,file\n{C[0]},{WS},a.mp3\n{C[0]},{WS},sub/b.opus\n{C[0]},{OTHER_WS},a.mp3\n"
    cl = read_contacts(write(tmp_path, text), folder)
    assert len(cl.rows) == 3 and cl.invalid == ()


def test_line_numbers_count_physical_lines_of_quoted_cells(tmp_path, folder):
    text = f'contact,note\n{C[0]},"two\nlines"\n{C[1]},x\nbad,y\n{C[2]},"a\nb\nc"\n'
    cl = read_contacts(write(tmp_path, text), folder, default_workspace=WS)
    assert [(r.line, r.contact) for r in cl.rows] == [(2, C[0]), (4, C[1]), (6, C[2])]
    assert cl.rows[0].extra == {"note": "two\nlines"}
    assert [(r.line, r.contact) for r in cl.invalid] == [(5, "bad")]


def test_safe_path_directly(tmp_path, folder):
    assert safe_path(folder, "a.mp3") == ((folder / "a.mp3").resolve(), "")
    assert safe_path(folder, "sub\\b.opus")[0] == (folder / "sub" / "b.opus").resolve()
    for bad in ("", "..", "../x", "/etc/passwd", "\\\\server\\share\\x.mp3", "D:x.mp3"):
        assert safe_path(folder, bad)[0] is None, bad


# --- the column vocabulary (shared with the sandbox's strict mode) ------------------------------

def test_headers_are_matched_whatever_their_case_spaces_or_dashes():
    from audiopipe.campaign.columns import Column, find_columns

    assert find_columns(["Name", " Contact ID ", "Workspace-UUID", "Audio File"]) == {
        Column.CONTACT: 1, Column.WORKSPACE: 2, Column.FILE: 3}
    assert find_columns(["id", "contact"]) == {Column.CONTACT: 1}  # the first alias in the list wins
    assert Column.FILE == "file" and str(Column.WORKSPACE) == "workspace"
