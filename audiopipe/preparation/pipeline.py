"""prepare_file() and prepare_many(): any audio in, files the API accepts out.

probe -> acceptable? (keep byte for byte) -> remux -> plan, encode, verify, re-plan when over ->
overflow (trim, split or fail) when even the floor bitrate cannot hold the whole duration.
Results are reused from an earlier run's outputs or from the cache (see :mod:`reuse`), keyed by the
input's content hash and the settings. Nothing is ever written over an input or over a file
audiopipe did not make for the same input and settings (see :mod:`outputs`).

The parts live in their own modules: settings, results, policy (send as it is?), transcode,
reuse, inputs (which files, which output names); this one runs them for one file, and for many.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from audiopipe.errors import AudiopipeError, PrepareError, ToolMissingError, UsageError, os_reason
from audiopipe.preparation.cache import Cache, cache_key
from audiopipe.preparation.encode import check_decodes_fully
from audiopipe.preparation.formats import ACCEPTABLE_AS_IS, FORMATS
from audiopipe.preparation.inputs import InputItem, collect_inputs, find_inputs, output_stems
from audiopipe.preparation.outputs import (
    OutputGuard,
    ProtectArg,
    Protected,
    as_protected,
    check_output_folder,
    copy_into_place,
    ownership_key,
    read_record,
    refuse_clashes,
    write_record,
)
from audiopipe.preparation.policy import acceptable, copyable
from audiopipe.preparation.probe import MediaInfo, check_readable, probe
from audiopipe.preparation.results import (
    EncodeProgress,
    EncodeProgressCallback,
    OutcomeCallback,
    OutputFile,
    PrepareAction,
    PrepareOutcome,
    PrepareResult,
)
from audiopipe.preparation.reuse import (
    input_sha256,
    input_sha256_in_background,
    manifest,
    owned_outputs,
    portable,
    restore,
    restore_files,
    reuse_earlier,
    shareable,
)
from audiopipe.preparation.settings import OVERFLOW_CHOICES, PrepareSettings
from audiopipe.preparation.sniff import sniff
from audiopipe.preparation.transcode import remux_into, transcode
from audiopipe.preparation.voicenote import with_verdict
from audiopipe.runner import ffmpeg_version, stop_children
from audiopipe.store.cache_tier import StoreTier
from audiopipe.version import __version__

# Names callers outside preparation/ import from here (cli, campaign): they moved to the modules
# above and are re-exported until those callers import them from their new homes.
__all__ = [
    "OVERFLOW_CHOICES", "EncodeProgress", "InputItem", "OutputFile", "PrepareOutcome", "PrepareResult",
    "PrepareSettings", "acceptable", "check_output_folder", "collect_inputs", "find_inputs", "prepare_file",
    "prepare_many",
]

log = logging.getLogger(__name__)

BeforeFFmpeg = Callable[[MediaInfo], None]
T = TypeVar("T")


def prepare_file(source: str | Path, out_dir: str | Path, settings: PrepareSettings | None = None, *,
                 name: str | None = None, overwrite: bool = False, protect: ProtectArg = (),
                 before_ffmpeg: BeforeFFmpeg | None = None,
                 progress: EncodeProgressCallback | None = None) -> PrepareResult:
    """Prepare one file into ``out_dir``; raises an :class:`AudiopipeError` when it cannot.

    No output ever replaces ``source`` or a file in ``protect`` (the contacts CSV, say), by name or
    by link: :class:`OutputClash`. A file audiopipe did not write for this input and settings is
    left alone (:class:`OutputError`) unless ``overwrite``; its own earlier outputs, intact, are
    reused as they are (``result.reused``).

    ``before_ffmpeg`` is called once before ffmpeg writes anything (a remux or an encode), never for
    a file kept as it is or found in the cache: the place to check what is cheap to check before
    the expensive work (``send`` checks the token there).

    ``progress`` is called from the preparing thread as each encode goes on (ffmpeg's own count of
    the audio written), about twice a second; files kept, remuxed or reused need no encode and
    report none.
    """
    src = Path(source)
    out = Path(out_dir)
    stem = name or src.stem
    protected = as_protected(protect)
    protected.add(src, "the input")
    refuse_clashes([out / stem], protected)
    return _prepare_one(src, out, settings or PrepareSettings(), stem, overwrite=overwrite, protected=protected,
                        before_ffmpeg=before_ffmpeg, progress=progress)


def _prepare_one(src: Path, out: Path, settings: PrepareSettings, stem: str, *, overwrite: bool,  # noqa: PLR0913 - prepare_file's and prepare_many's keywords, passed on
                 protected: Protected, before_ffmpeg: BeforeFFmpeg | None = None,
                 progress: EncodeProgressCallback | None = None, tier: StoreTier | None = None) -> PrepareResult:
    dest_stem = out / stem
    check_readable(src)
    cache = Cache(settings.cache_dir) if settings.cache else None
    record = read_record(dest_stem)
    # the content hash first: a hit needs neither ffprobe nor ffmpeg
    sha = input_sha256(src) if cache or record else None
    ours = owned_outputs(record, sha, settings.cache_fields(), out)
    guard = OutputGuard(protected, overwrite, ours)
    if record and sha and len(ours) == len(record.files):
        reused = reuse_earlier(record, out, src, sha, guard)
        if reused is not None:
            log.info("%s: %s before with the same settings; its outputs are already in %s", src,
                     reused.action, out)
            return with_verdict(reused, settings)
    work = _Work(src, settings, dest_stem, guard, before_ffmpeg, progress)
    if cache:
        assert sha is not None
        result = _through_cache(work, cache, sha, stem, tier)
    else:
        result = work.run((lambda: sha) if sha else input_sha256_in_background(src))
    write_record(dest_stem, ownership_key(result.source_sha256, settings.cache_fields()),
                 [o.path for o in result.outputs], portable(manifest(result, stem)))
    return result


def _through_cache(work: _Work, cache: Cache, sha: str, stem: str, tier: StoreTier | None) -> PrepareResult:
    """The cache's copy of this input and settings (the local one, else the store's when ``tier``), or
    the work done and stored there (in both)."""
    key = cache_key(sha, work.settings.cache_fields(), f"{ffmpeg_version()} audiopipe {__version__}")
    hit = cache.get(key)
    if hit is not None:
        result = restore(hit, work.dest_stem, work.src, sha, work.guard)
        log.info("%s: %s before with the same settings; reused from the cache", work.src, result.action)
        return with_verdict(result, work.settings)
    shared = tier.get(key) if tier is not None else None
    if shared is not None:
        cache.put(key, *shared)  # the next run here needs no store
        result = restore_files(*shared, dest_stem=work.dest_stem, source=work.src, sha=sha,
                               guard=work.guard)
        log.info("%s: %s before with the same settings; reused from the store", work.src, result.action)
        return with_verdict(result, work.settings)
    result = work.run(lambda: sha)
    made = manifest(result, stem)
    cache.put(key, made, [o.path for o in result.outputs])
    if tier is not None:
        tier.put(key, shareable(made), [o.path for o in result.outputs])
    return result


@dataclass(frozen=True)
class _Work:
    """Keep, remux or convert one input into outputs named after ``dest_stem``."""

    src: Path
    settings: PrepareSettings
    dest_stem: Path
    guard: OutputGuard
    before_ffmpeg: BeforeFFmpeg | None = None
    progress: EncodeProgressCallback | None = None

    def run(self, source_sha: Callable[[], str]) -> PrepareResult:
        """The result (with the verdict on a --voice-note); ``source_sha`` is asked only once the
        outputs are made, so a hash taken in the background overlaps the work."""
        info = probe(self.src)  # refuses missing, empty, corrupt, playlist and no-audio inputs
        seen = sniff(self.src)
        ok, why = acceptable(info, self.settings, seen.extension)
        log.info("%s: %s, %s, %d Hz, %d ch, %.1f s, %s bytes: %s", self.src, info.container.split(",")[0],
                 info.audio.codec, info.audio.sample_rate, info.audio.channels, info.duration, f"{info.size:,}",
                 "sent as it is" if ok else f"not sent as it is: {why}")
        if ok or copyable(info, self.settings)[0]:
            # kept and remuxed files go out with the source's own packets: a header that claims more (or
            # less) than they hold would reach the customer, so decode them first, as strictly as an encode
            check_decodes_fully(info)
        result = self._keep(info, seen.mime, source_sha) if ok else self._convert(info, source_sha)
        return with_verdict(result, self.settings)

    def _keep(self, info: MediaInfo, mime: str, source_sha: Callable[[], str]) -> PrepareResult:
        fmt = FORMATS[ACCEPTABLE_AS_IS[(info.container, info.audio.codec)]]
        dest = self.dest_stem.with_name(f"{self.dest_stem.name}.{fmt.extension}")
        copy_into_place(self.src, dest, replace=self.guard.claim(dest))
        kept = OutputFile(path=dest, size=info.size, format=fmt.name, content_type=fmt.content_type,
                          mime=mime, codec=info.audio.codec, duration=info.duration,
                          bitrate=info.audio.bit_rate or info.bit_rate)
        return PrepareResult(source=self.src, source_sha256=source_sha(), info=info, action=PrepareAction.KEPT,
                             outputs=(kept,))

    def _convert(self, info: MediaInfo, source_sha: Callable[[], str]) -> PrepareResult:
        if self.before_ffmpeg is not None:
            self.before_ffmpeg(info)
        remuxed = remux_into(self.src, info, self.settings, self.dest_stem, guard=self.guard)
        if remuxed is not None:
            log.info("%s: remuxed: the %s audio copied unchanged into .%s", self.src, info.audio.codec,
                     remuxed.format)
            return PrepareResult(source=self.src, source_sha256=source_sha(), info=info,
                                 action=PrepareAction.REMUXED, outputs=(remuxed,), passes=1)
        made = transcode(self.src, info, self.settings, self.dest_stem, guard=self.guard, progress=self.progress)
        return PrepareResult(source=self.src, source_sha256=source_sha(), info=info, action=made.action,
                             outputs=made.outputs, passes=made.passes, first_fit=made.first_fit,
                             kept_duration=made.kept_duration, plan=made.plan)


# --- many files -------------------------------------------------------------------------------

def prepare_many(items: Sequence[InputItem | str | Path], out_dir: str | Path,  # noqa: PLR0913 - the public API: each option a keyword with a default
                 settings: PrepareSettings | None = None, *, jobs: int = 1,
                 progress: OutcomeCallback | None = None,
                 encode_progress: EncodeProgressCallback | None = None, overwrite: bool = False,
                 protect: ProtectArg = (), tier: StoreTier | None = None) -> list[PrepareOutcome]:
    """Prepare every item (``jobs`` at a time); one failure never stops the others.

    Returns one outcome per item, in the order given; ``progress`` is called as each finishes,
    ``encode_progress`` as each encode goes on (from the worker threads, ``jobs`` at once).
    Before any work, :class:`OutputClash` when an output would replace one of the items or a file
    in ``protect``; a file in the way that audiopipe did not write fails only its own item (see
    :func:`prepare_file`).

    ``tier``: the store as a second tier of the cache (see :mod:`~audiopipe.store.cache_tier`).
    """
    chosen = settings or PrepareSettings()
    norm = [i if isinstance(i, InputItem) else InputItem(Path(i)) for i in items]
    stems = output_stems(norm)
    out = Path(out_dir)
    protected = as_protected(protect)
    for i in norm:
        protected.add(i.path, "the input")
    refuse_clashes([out / s for s in stems], protected)
    lock = threading.Lock()

    def one(idx: int) -> PrepareOutcome:
        item, stem = norm[idx], stems[idx]
        outcome = _outcome(item.path, lambda: _prepare_one(
            item.path, out / stem.parent, chosen, stem.name, overwrite=overwrite, protected=protected,
            progress=encode_progress, tier=tier))
        if progress:
            with lock:
                progress(outcome)
        return outcome

    return _in_parallel(one, len(norm), jobs)


def _outcome(source: Path, attempt: Callable[[], PrepareResult]) -> PrepareOutcome:
    """One input's outcome: its result, or the error that failed it (and it alone)."""
    try:
        return PrepareOutcome(source, result=attempt())
    except (UsageError, ToolMissingError):
        raise  # the set-up is wrong (ffmpeg missing, a bad setting): no file can succeed
    except AudiopipeError as exc:
        return PrepareOutcome(source, error=exc)
    except OSError as exc:  # an output that cannot be written (a name too long, a full disk): this file only
        where = f"{exc.filename}: " if exc.filename else ""
        return PrepareOutcome(source, error=PrepareError(source, where + os_reason(exc)))


def _in_parallel(work: Callable[[int], T], count: int, jobs: int) -> list[T]:
    """``work(i)`` for each i below ``count``, ``jobs`` at a time; the answers in order."""
    if jobs <= 1 or count <= 1:
        return [work(i) for i in range(count)]
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="prepare")
    interrupted = False
    try:
        return list(pool.map(work, range(count)))
    except KeyboardInterrupt:
        # Ctrl-C, SIGTERM: the ffmpegs running now are stopped (in their own session, a terminal's
        # Ctrl-C never reached them), no queued file starts, and no worker holds the caller
        interrupted = True
        stop_children(for_good=False)
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
