"""audiopipe.files' bounded reader: a pipe or a device is refused unread, a file over the limit is
refused one byte past it, each with its own error type (what callers word their hints by). Real FIFOs
and files; nothing mocked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audiopipe.errors import AudiopipeError
from audiopipe.files import FileTooLarge, NotRegularFile, SmallFileError, read_small_file


def test_a_file_within_the_limit_is_read_whole(tmp_path):
    path = tmp_path / "token"
    path.write_bytes(b"x" * 1024)
    assert read_small_file(path, 1024) == b"x" * 1024


def test_one_byte_over_the_limit_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_bytes(b"x" * 1025)
    with pytest.raises(FileTooLarge, match="larger than 1 KiB") as caught:
        read_small_file(path, 1024)
    assert caught.value.limit == 1024


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_what_is_not_a_regular_file_is_refused_unread(tmp_path, kind):
    path = {"fifo": tmp_path / "pipe", "device": Path("/dev/zero"), "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes to it: a plain open() would wait forever
    with pytest.raises(NotRegularFile):
        read_small_file(path, 1024)


def test_a_missing_file_is_a_small_file_error_in_words(tmp_path):
    with pytest.raises(SmallFileError) as caught:
        read_small_file(tmp_path / "absent", 1024)
    assert not isinstance(caught.value, (NotRegularFile, FileTooLarge))
    assert isinstance(caught.value, AudiopipeError) and str(caught.value)

