"""Results without work: outputs an earlier run left in place (known by their sidecar), or a copy of
the same input and settings from the cache.

Both are keyed by the input's content hash, so the hash comes first: a hit needs neither ffprobe
nor ffmpeg. When there is nothing to reuse the hash is taken on another thread while ffmpeg works.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from audiopipe.errors import InputError
from audiopipe.preparation.cache import file_sha256
from audiopipe.preparation.outputs import OutputGuard, Record, copy_into_place, intact, ownership_key
from audiopipe.preparation.plan import EncodePlan
from audiopipe.preparation.probe import AudioStream, MediaInfo
from audiopipe.preparation.results import OutputFile, PrepareAction, PrepareResult

Manifest = dict[str, Any]


def input_sha256(path: Path) -> str:
    """The content hash of an input; :class:`InputError` when it cannot be read."""
    try:
        return file_sha256(path)
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror}") from None


def input_sha256_in_background(path: Path) -> Callable[[], str]:
    """Start hashing ``path`` on another thread (it overlaps the encode); call the result to join."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["sha"] = file_sha256(path)
        except OSError as exc:
            box["error"] = exc

    t = threading.Thread(target=work, name="hash", daemon=True)
    t.start()

    def join() -> str:
        t.join()
        if "error" in box:
            raise InputError(path, f"cannot be read: {box['error'].strerror}")
        return str(box["sha"])

    return join


def owned_outputs(record: Record | None, sha: str | None, settings_fields: dict[str, Any],
                  folder: Path) -> frozenset[str]:
    """Names of the outputs in ``folder`` that audiopipe wrote for this input and these settings,
    still as it wrote them."""
    if record and sha and record.key == ownership_key(sha, settings_fields):
        return intact(folder, record)
    return frozenset()


def reuse_earlier(record: Record, out: Path, src: Path, sha: str, guard: OutputGuard) -> PrepareResult | None:
    """The result of an earlier run whose outputs are all still here, intact; None if its sidecar
    cannot say what it was (then the work is done again, and the files are not taken for ours)."""
    paths = [out / name for name, _ in record.files]
    for path in paths:
        guard.claim(path)  # still never an input, even one hard-linked there since
    try:
        return result_from(record.result, paths, src, sha, reused=True)
    except (KeyError, TypeError, ValueError):
        return None


def restore(hit: tuple[Manifest, Path], dest_stem: Path, source: Path, sha: str,
            guard: OutputGuard) -> PrepareResult:
    """Copy a cache entry's outputs into place under ``dest_stem``'s names; all or none."""
    manifest, entry = hit
    return restore_files(manifest, [entry / name for name in manifest["files"]], dest_stem=dest_stem, source=source,
                         sha=sha, guard=guard)


def restore_files(manifest: Manifest, files: Sequence[Path], *, dest_stem: Path, source: Path, sha: str,
                  guard: OutputGuard) -> PrepareResult:
    """Copy ``files`` (a manifest's outputs, in its order, wherever they are kept) into place under
    ``dest_stem``'s names; all or none."""
    dests = [dest_stem.with_name(Path(o["path"]).name.replace(manifest["stem"], dest_stem.name, 1))
             for o in manifest["outputs"]]
    replace_ok = [guard.claim(d) for d in dests]  # all names free (or ours) before the first copy
    placed: list[Path] = []
    try:
        for file, dest, may_replace in zip(files, dests, replace_ok, strict=False):
            copy_into_place(file, dest, replace=may_replace)
            placed.append(dest)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    return result_from(manifest, dests, source, sha, reused=False)


def manifest(result: PrepareResult, stem: str) -> Manifest:
    """What the cache and the sidecar keep of a result: enough to rebuild it without work."""
    return dict(result.to_dict(), stem=stem, input=result.info.to_dict())


def portable(manifest: Manifest) -> Manifest:
    """A manifest without where and how this run found things: the same outputs always get the same
    sidecar, whether encoded or restored from the cache, and a moved folder keeps working."""
    kept = {k: v for k, v in manifest.items() if k not in ("source", "cached", "reused")}
    kept["outputs"] = [{k: v for k, v in o.items() if k != "path"} for o in manifest["outputs"]]
    kept["input"] = {k: v for k, v in manifest["input"].items() if k != "path"}
    return kept


def shareable(manifest: Manifest) -> Manifest:
    """A manifest another machine can restore from (the store's tier of the cache): :func:`portable`,
    each output named by its file name only (what :func:`restore_files` renames after the stem)."""
    kept = portable(manifest)
    kept["outputs"] = [dict(o, path=Path(full["path"]).name)
                       for o, full in zip(kept["outputs"], manifest["outputs"], strict=True)]
    return kept


def result_from(manifest: Manifest, paths: Sequence[Path], source: Path, sha: str, *,
                reused: bool) -> PrepareResult:
    """A result rebuilt from a manifest (the cache's, or a sidecar's) with outputs at ``paths``."""
    outputs = tuple(OutputFile(**dict(o, path=path)) for o, path in zip(manifest["outputs"], paths, strict=False))
    inp = dict(manifest["input"])
    inp["audio"] = AudioStream(**inp["audio"])
    inp["path"] = str(source)
    inp["tags"] = tuple(inp.get("tags") or ())
    plan_d = manifest.get("plan")
    return PrepareResult(source=source, source_sha256=sha, info=MediaInfo(**inp),
                         action=PrepareAction(manifest["action"]), outputs=outputs, passes=manifest["passes"],
                         first_fit=manifest.get("first_fit", True),
                         kept_duration=manifest["kept_duration"], cached=not reused,
                         plan=EncodePlan(**plan_d) if plan_d else None, reused=reused)
