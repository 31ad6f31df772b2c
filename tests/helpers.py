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
