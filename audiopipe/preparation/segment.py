"""The pydub edge: accept and return ``AudioSegment`` for Python users.

Only here is audio decoded into Python memory, and only because the caller already holds it there;
the main path (files in, files out) never decodes whole inputs into Python.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audiopipe.preparation.pipeline import prepare_file
from audiopipe.preparation.results import PrepareResult
from audiopipe.preparation.settings import PrepareSettings

if TYPE_CHECKING:
    from pydub import AudioSegment


def prepare(source: str | Path | AudioSegment, out_dir: str | Path,
            settings: PrepareSettings | None = None, *, name: str | None = None,
            overwrite: bool = False, **overrides: Any) -> PrepareResult:
    """Prepare a file path or a pydub ``AudioSegment`` into ``out_dir``.

    ``overrides`` are PrepareSettings fields (``format="mp3"``, ``max_size=5_000_000``...).
    A segment is written once as WAV to a temp folder and prepared like any file; ``name`` is the
    output's stem (default ``segment`` for segments, the file's stem otherwise). As with
    :func:`prepare_file`, a file already in ``out_dir`` that audiopipe did not write for the same
    audio and settings is left alone (:class:`~audiopipe.errors.OutputError`) unless ``overwrite``.
    """
    if overrides:
        settings = replace(settings or PrepareSettings(), **overrides)
    if isinstance(source, (str, Path)):
        return prepare_file(source, out_dir, settings, name=name, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="audiopipe-seg-") as tmp:
        wav = Path(tmp) / "segment.wav"
        source.export(str(wav), format="wav")
        return prepare_file(wav, out_dir, settings, name=name or "segment", overwrite=overwrite)


def to_segment(result_or_path: PrepareResult | str | Path, part: int = 1) -> AudioSegment:
    """Load a prepared output (part ``part`` of a split) back as an ``AudioSegment``."""
    from pydub import AudioSegment

    path = result_or_path.outputs[part - 1].path if isinstance(result_or_path, PrepareResult) else Path(result_or_path)
    return AudioSegment.from_file(str(path))
