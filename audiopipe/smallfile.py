"""The bounded reader of small files now lives in :mod:`audiopipe.files`; these names stay importable
from here for the modules that still import them from this path."""

from __future__ import annotations

from audiopipe.files import NOT_REGULAR, FileTooLarge, NotRegularFile, SmallFileError, read_small_file

__all__ = ["NOT_REGULAR", "FileTooLarge", "NotRegularFile", "SmallFileError", "read_small_file"]
