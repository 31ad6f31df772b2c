"""Small helpers the media tests share (not fixtures: plain functions)."""

from __future__ import annotations

from pathlib import Path

from audiopipe.prepare import PrepareSettings


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden ones (temp ``.part`` files) included."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def settings(tmp_path: Path, **kw) -> PrepareSettings:  # type: ignore[no-untyped-def]
    """Prepare settings whose cache lives in the test's own folder."""
    return PrepareSettings(cache_dir=tmp_path / "cache", **kw)


# The API's own words and limits (docs/api.md §1-2), written out here so a change in the sandbox shows.
WS = "0b6f2a52-6a1f-4b52-9a53-2f0f6a0f7c11"
CONTACT = "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21"
MIMES_MSG = "The file field must be a file of type: aac, amr, mp3, m4a, ogg."
SIZE_MSG = "The file field must not be greater than 16384 kilobytes."
MAX_BYTES = 16_777_216
