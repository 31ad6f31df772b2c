"""Which files to prepare, and the output name each gets.

Files named directly are always tried; folders are searched recursively for media names (sorted,
hidden ones skipped). Two inputs that would share an output name (``a.wav`` and ``a.mp3``) get
distinct ones rather than overwriting each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from audiopipe.errors import InputError, os_reason

# Extensions picked up when a folder is given; a file named directly is always tried.
MEDIA_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".mp3", ".m4a", ".m4b", ".aac", ".ogg", ".oga", ".opus", ".webm",
    ".weba", ".mka", ".mkv", ".mp4", ".mov", ".3gp", ".amr", ".aif", ".aiff", ".aifc", ".caf",
    ".wma", ".wmv", ".au", ".snd", ".ac3", ".wv", ".ape", ".avi", ".mpeg", ".mpg", ".ts", ".mp2",
})


@dataclass(frozen=True)
class InputItem:
    path: Path
    out_subdir: Path = field(default_factory=Path)  # relative folder under the output folder


@dataclass(frozen=True)
class FoundInputs:
    items: list[InputItem]
    not_audio: list[Path]  # files in the folders searched whose names are not audio or video


def collect_inputs(paths: Iterable[str | Path], *, exclude: str | Path | None = None) -> list[InputItem]:
    """Files as given, and media files found recursively under folders (sorted, hidden ones skipped).

    ``exclude`` is a folder never searched (the output folder, when it lies inside an input folder).
    A media name found in a folder that cannot be read as a file (a link loop, a dangling link) is
    kept, so that it is reported in its turn rather than silently skipped.
    """
    return find_inputs(paths, exclude=exclude).items


def find_inputs(paths: Iterable[str | Path], *, exclude: str | Path | None = None) -> FoundInputs:
    """:func:`collect_inputs`, and the files it left out because they are not audio (a user is told
    how many)."""
    found = FoundInputs([], [])
    skip = _real_path(Path(exclude)) if exclude else None
    for raw in paths:
        p = Path(raw)
        if _is_folder(p):
            _search(p, skip, found)
        else:
            found.items.append(InputItem(p))  # a missing or unreadable file is reported by probe, in its turn
    return found


def _search(folder: Path, skip: Path | None, found: FoundInputs) -> None:
    """Add the media files under ``folder`` (and the other files, as not audio) to ``found``."""
    try:
        found_all = sorted(folder.rglob("*"))
    except OSError as exc:
        raise InputError(folder, f"cannot list the folder: {os_reason(exc)}") from None
    for path in found_all:
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        real = _real_path(path)
        if skip is not None and real is not None and (real == skip or skip in real.parents):
            continue
        if path.suffix.lower() not in MEDIA_EXTENSIONS:
            if real is not None and _is_file(path):
                found.not_audio.append(path)
            continue
        if real is None or _is_file(path):
            found.items.append(InputItem(path, rel.parent))


def _is_folder(p: Path) -> bool:
    try:
        return p.is_dir()
    except (OSError, ValueError):  # a name over 255 bytes, say: not a folder; probe says what it is
        return False


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):
        return True  # something is there that cannot be read: keep it, so it is reported


def _real_path(p: Path) -> Path | None:
    """Where ``p`` really is, or None when its links cannot be followed (a loop, a dangling link)."""
    try:
        return p.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None


def output_stems(items: Sequence[InputItem]) -> list[Path]:
    """A distinct relative output stem per input: ``a.wav`` and ``a.mp3`` in one folder become
    ``a`` and ``a-mp3`` rather than overwriting each other."""
    taken: set[Path] = set()
    stems = []
    for item in items:
        stem = item.out_subdir / item.path.stem
        if stem in taken:
            base = f"{item.path.stem}-{item.path.suffix.lstrip('.').lower() or 'file'}"
            stem = item.out_subdir / base
            n = 2
            while stem in taken:
                stem = item.out_subdir / f"{base}-{n}"
                n += 1
        taken.add(stem)
        stems.append(stem)
    return stems
