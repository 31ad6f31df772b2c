"""What the CLI says about audio files: ``probe``'s table, the per-file lines of ``prepare``, the
warnings about what was cut, the one line of a send, their JSON, and the bars of long encodes.

Pure formatting (no printing) except :class:`EncodeBars`, which draws on stderr when it is a
terminal. Text that comes from outside (file names) is escaped by the caller's ``say``/``safe``.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from audiopipe.preparation.pipeline import EncodeProgress, OutputFile, PrepareOutcome, PrepareResult
from audiopipe.preparation.plan import DoesNotFit
from audiopipe.text import human_duration, human_size, safe

if TYPE_CHECKING:
    from audiopipe.errors import AudiopipeError
    from audiopipe.preparation.probe import MediaInfo
    from audiopipe.preparation.sniff import Sniff

FORMAT_LABELS = {"ogg": "Ogg/Opus", "mp3": "MP3", "m4a": "M4A/AAC", "aac": "AAC", "amr": "AMR"}

# An encode shorter than this shows no bar: a bar that flashes up and away says nothing.
BAR_DELAY = 1.0


def clock(seconds: float) -> str:
    """``1:54``, ``1:02:03``: whole seconds, the way a player shows a length."""
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_label(name: str) -> str:
    return FORMAT_LABELS.get(name, name)


# --- probe ---------------------------------------------------------------------------------------

PROBE_HEADER = ["FILE", "CONTAINER", "CODEC", "RATE", "CH", "DURATION", "SIZE", "BITRATE", "A/V",
                "SNIFFED", "SENT AS IS?"]


def probe_row(path: Path, info: MediaInfo, seen: Sniff, as_is: bool, why: str) -> list[str]:
    """One file's row of ``probe``'s table, escaped (before the columns are measured)."""
    return [safe(c) for c in (
        str(path), info.container.split(",")[0], info.audio.codec, str(info.audio.sample_rate),
        str(info.audio.channels), human_duration(info.duration), human_size(info.size),
        _kbps(info.audio.bit_rate or info.bit_rate), f"{info.audio_streams}/{info.video_streams}",
        seen.mime, "yes" if as_is else f"no: {why}")]


def probe_json(info: MediaInfo, seen: Sniff, as_is: bool, why: str) -> dict[str, Any]:
    """One file for ``probe --json``."""
    return dict(info.to_dict(), ok=True, sniffed_mime=seen.mime, server_extension=seen.extension,
                sends_as_is=as_is, why_not=None if as_is else why)


def table(header: list[str], rows: Sequence[list[str]]) -> list[str]:
    """Columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def _kbps(bitrate: int | None) -> str:
    return f"{bitrate / 1000:.0f} kb/s" if bitrate else "-"


def skipped_line(not_audio: list[Path]) -> str | None:
    """What a folder held besides audio, in one line (None when nothing was skipped)."""
    if not not_audio:
        return None
    return f"skipped {len(not_audio)} file(s) that are not audio (by their names), e.g. {not_audio[0]}"


# --- prepare ---------------------------------------------------------------------------------------

ACTIONS = ("kept", "remuxed", "transcoded", "trimmed", "split", "failed")


def prepared_line(outcomes: list[PrepareOutcome]) -> str:
    """``prepared 4 input(s): 1 kept, 0 remuxed, 2 transcoded, 0 trimmed, 0 split, 1 failed``"""
    counts = Counter(o.result.action if o.result else "failed" for o in outcomes)
    return f"prepared {len(outcomes)} input(s): " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ACTIONS)


def overflow_hint(error: AudiopipeError) -> str:
    """What to do about a recording that does not fit (added to its error line)."""
    if isinstance(error, DoesNotFit):
        return " (use --on-overflow trim or split, or raise --max-size)"
    return ""


def kept_text(result: PrepareResult) -> str:
    """``kept 1:54 of 3:00 (1:06 cut)``: the cut is the difference of the rounded lengths shown, so
    the three figures always add up."""
    kept, whole = round(result.duration_sent), round(result.source_duration)
    return f"kept {clock(kept)} of {clock(whole)} ({clock(max(0, whole - kept))} cut)"


def prepare_warnings(result: PrepareResult, name: str | Path | None = None) -> list[str]:
    """The lines (without the ``audiopipe: warning:`` prefix) a user must see about one prepared
    input, whatever else is hidden: what a trim cut off, a voice note that will not play inline.
    ``name``: how to call the input (default its path)."""
    shown = name if name is not None else result.source
    lines = []
    if result.action == "trimmed":
        budget = result.plan.budget if result.plan else None
        over = f" of {budget:,} bytes" if budget else ""
        lines.append(f"{shown}: trimmed to fit the budget{over}: {kept_text(result)}; "
                     "use --on-overflow split to send all of it, or raise --max-size")
    lines += [f"{shown}: {note}" for note in result.notes]
    return lines


def name_in(folder: Path, path: Path) -> Path:
    """``path`` as the user named it: under ``folder`` as given when it lies there (a batch works on
    resolved paths), else as it is."""
    try:
        return folder / Path(path).relative_to(folder.resolve())
    except ValueError:
        return Path(path)


def output_summary(result: PrepareResult, out: OutputFile | None = None) -> str:
    """``transcoded, Ogg/Opus, 998.1 KB, 1:54 of 3:00`` (one part's size and length when ``out``)."""
    return f"{result.action}, {_what_came_out(result, out)}"


def _what_came_out(result: PrepareResult, out: OutputFile | None) -> str:
    fmt = format_label(out.format if out else (result.outputs[0].format if result.outputs else "?"))
    size = out.size if out else result.size
    if result.action == "trimmed":
        length = f"{clock(result.duration_sent)} of {clock(result.source_duration)}"
    elif result.action == "split" and out is not None:
        length = f"part {out.part}/{out.parts}, {clock(out.duration)} of {clock(result.source_duration)}"
    else:
        length = clock(result.duration_sent)
    return f"{fmt}, {human_size(size)}, {length}"


def describe_prepared(outcome: PrepareOutcome) -> str:
    """The per-file line of ``prepare``: what was done, where it went, how big and long it is."""
    r = outcome.result
    assert r is not None
    outs = ", ".join(str(o.path) for o in r.outputs)
    extra = ""
    if r.action == "split":
        extra = f" ({len(r.outputs)} parts)"
    if r.passes > 1:
        extra += f" ({r.passes} passes)"
    if r.reused:
        extra += " (already there)"
    elif r.cached:
        extra += " (cached)"
    return f"{r.action:<11} {outcome.source} -> {outs}: {_what_came_out(r, None)}{extra}"


def sent_line(source: Path, result: PrepareResult, out: OutputFile, contact: str, message_id: str | None) -> str:
    """The one line of ``send``: input -> prepared file, what was done, size, contact, message id."""
    mid = message_id or "(created; the server returned no id)"
    return f"{source} -> {out.path.name}: {output_summary(result, out)}; sent to {contact}: message {mid}"


def file_fields(result: PrepareResult, out: OutputFile | None = None) -> dict[str, Any]:
    """What was sent, for JSON (``send --json`` per message, ``batch --json`` per file)."""
    fields: dict[str, Any] = {
        "input": str(result.source), "action": result.action,
        "source_duration": round(result.source_duration, 3), "trimmed_seconds": round(result.trimmed_seconds, 3),
    }
    if out is not None:
        fields.update(prepared_file=out.path.name, format=out.format, size=out.size,
                      duration_sent=round(out.duration, 3), part=out.part, parts=out.parts)
    else:
        fields.update(format=result.outputs[0].format if result.outputs else None, size=result.size,
                      duration_sent=round(result.duration_sent, 3), parts=len(result.outputs))
    if result.voice_note_inline is not None:
        fields["voice_note_inline"] = result.voice_note_inline
    if result.notes:
        fields["notes"] = list(result.notes)
    return fields


class EncodeBars:
    """One bar per file being encoded, on stderr, for encodes that last over :data:`BAR_DELAY`.

    Fed by the library's encode-progress callback (from any worker thread); ``done(source)`` removes
    a file's bar. Disabled, it draws nothing at all (no escape codes): use it when stderr is not a
    terminal too. A context manager: leaving it closes every bar, so no message is drawn over one.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bars: dict[Path, tuple[Any, tuple[int, int]]] = {}
        self._lock = threading.RLock()  # a signal may interrupt this thread while it holds it

    def __enter__(self) -> EncodeBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, p: EncodeProgress) -> None:
        if not self.enabled:
            return
        with self._lock:
            bar, step = self._bars.get(p.source, (None, (0, 0)))
            if bar is None or step != (p.attempt, p.part):
                if bar is not None:
                    bar.close()
                bar = self._new_bar(p)
                self._bars[p.source] = (bar, (p.attempt, p.part))
            bar.update(p.done - bar.n)

    def done(self, source: Path) -> None:
        with self._lock:
            bar, _step = self._bars.pop(Path(source), (None, None))
            if bar is not None:
                bar.close()

    def close(self) -> None:
        with self._lock:
            for bar, _step in self._bars.values():
                bar.close()
            self._bars.clear()

    @staticmethod
    def _new_bar(p: EncodeProgress) -> Any:
        what = f"encoding {safe(p.source.name)}"
        if p.parts > 1:
            what += f" (part {p.part}/{p.parts})"
        if p.attempt > 1:
            what += f" (again, attempt {p.attempt})"
        return tqdm(total=round(p.total, 1), desc=what, file=sys.stderr, leave=False, dynamic_ncols=True,
                    delay=BAR_DELAY, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of "
                                                "audio [{elapsed}<{remaining}]")
