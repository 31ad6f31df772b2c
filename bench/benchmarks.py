"""The five prepare-stage benchmarks. Each measures its baseline in the same run and returns

    {"rows": [[benchmark, measure, audiopipe, baseline, ratio, aim, verdict], ...], "details": {...}}

``rows`` go into the final table; ``details`` into results.json.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shlex
import shutil
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import common
from common import (
    AUDIOPIPE,
    BENCH,
    PY,
    fail,
    fmt_mb,
    fmt_s,
    free_bytes,
    fresh_dir,
    log,
    make_long_wav,
    make_source,
    md_table,
    median,
    peak_rss,
    sha256,
    timed,
    timed_load,
    wait_quiet,
)

BUDGET = 16_000_000  # audiopipe's default --max-size
GB = 1_000_000_000


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("ok" if ok else "MISSED")


def _plan_argv(wav: Path, fmt: str, out: Path) -> tuple[list[str], Any]:
    """The argv audiopipe's encode step builds for ``wav`` (plan() then build_argv())."""
    from audiopipe.preparation.encode import build_argv
    from audiopipe.preparation.formats import get_format
    from audiopipe.preparation.plan import plan
    from audiopipe.preparation.probe import probe

    p = plan(probe(wav), get_format(fmt), BUDGET)
    return build_argv(wav, p, out), p


def _without_progress(argv: list[str]) -> list[str]:
    """``argv`` without the progress reporting the runner adds (``-progress pipe:1 -nostats``)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "-progress":
            skip = True
        elif a != "-nostats":
            out.append(a)
    return out


def _debug_encode_argv(stderr: bytes) -> list[str] | None:
    """The ffmpeg encode command audiopipe logged under --debug."""
    for line in stderr.decode(errors="replace").splitlines():
        if "audiopipe.runner: run: " not in line:
            continue
        argv = shlex.split(line.split("audiopipe.runner: run: ", 1)[1])
        if Path(argv[0]).name.startswith("ffmpeg") and "-i" in argv and "-c:a" in argv:
            return argv
    return None


# --- 1. speed ---------------------------------------------------------------------------------

def bench_speed(quick: bool, reps: int) -> dict[str, Any]:
    dur = 5 if common.SMOKE else 60 if quick else 600
    wav = make_source("mix", dur, 2)
    log(f"  input: {wav.name} ({wav.stat().st_size / 1e6:.0f} MB, {dur} s stereo 44.1 kHz), "
        f"{reps} timed runs each, interleaved, after one warm-up")
    rows, details = [], {"input": str(wav), "duration_s": dur, "reps": reps, "formats": {}}
    for fmt in ("ogg",) if common.SMOKE else ("ogg", "mp3"):
        work = fresh_dir(common.WORK / "speed" / fmt)
        ff_out = work / f"ffmpeg.{fmt}"
        ap_cmd = [*AUDIOPIPE, "prepare", str(wav), "--out", str(work / "ap"), "--no-cache",
                  "--format", fmt, "--quiet"]
        # Warm-up, and the exact argv audiopipe ran (from --debug), checked against build_argv.
        _, proc = timed([*AUDIOPIPE, "--debug", *ap_cmd[len(AUDIOPIPE):]])
        logged = _debug_encode_argv(proc.stderr)
        built, p = _plan_argv(wav, fmt, ff_out)
        if logged is None:
            raise RuntimeError("could not find the encode command in audiopipe --debug output")
        ff_argv = [*logged[:-1], "file:" + str(ff_out.absolute())]
        same = _without_progress(logged[:-1]) == built[:-1]
        timed(ff_argv)  # warm-up of the baseline too
        ap_t, ff_t, other = [], [], []
        for _ in range(reps):
            wait_quiet(f"speed {fmt}")
            shutil.rmtree(work / "ap", ignore_errors=True)
            t, _, load_a = timed_load(ap_cmd)
            ap_t.append(t)
            ff_out.unlink(missing_ok=True)
            t, _, load_f = timed_load(ff_argv)
            ff_t.append(t)
            other += [load_a, load_f]
        ap_m, ff_m = median(ap_t), median(ff_t)
        ratio = ap_m / ff_m
        out_files = list((work / "ap").glob(f"*.{fmt}"))
        ap_size = out_files[0].stat().st_size if out_files else None
        breakdown = _speed_breakdown(wav, fmt, ff_argv, p, ff_m)
        log(f"  {fmt}: audiopipe {ap_m:.2f} s {[f'{t:.2f}' for t in ap_t]}  ffmpeg {ff_m:.2f} s "
            f"{[f'{t:.2f}' for t in ff_t]}  ratio {ratio:.3f}x (min/min {min(ap_t) / min(ff_t):.3f}x; "
            f"other processes {_loads(other)})  (plan {p.bitrate // 1000} kbit/s "
            f"{p.channels} ch {p.sample_rate} Hz; argv == build_argv: {same})")
        log("        where audiopipe's extra time goes (in-process, one run): " +
            ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in breakdown.items()))
        details["formats"][fmt] = {
            "audiopipe_s": ap_t, "ffmpeg_s": ff_t, "audiopipe_median_s": ap_m, "ffmpeg_median_s": ff_m,
            "ratio": ratio, "ratio_of_minimums": min(ap_t) / min(ff_t), "foreign_cpu_cores": other,
            "ffmpeg_argv": ff_argv, "argv_matches_build_argv": same,
            "plan": {"bitrate": p.bitrate, "channels": p.channels, "sample_rate": p.sample_rate,
                     "expected_size": p.expected_size}, "output_size": ap_size,
            "breakdown_s": breakdown,
        }
        if ap_size is None:
            fail(f"speed {fmt}: audiopipe prepare wrote no .{fmt} into {work / 'ap'}")
        rows.append([f"speed {fmt} ({dur // 60 if dur >= 60 else dur}{' min' if dur >= 60 else ' s'} WAV)",
                     f"median wall of {reps}", fmt_s(ap_m), f"{fmt_s(ff_m)} (ffmpeg)",
                     f"{ratio:.3f}x", "<= 1.10x", "smoke" if quick else verdict(ratio <= 1.10)])
    return {"rows": rows, "details": details}


def _loads(xs: list[float | None]) -> str:
    v = [x for x in xs if x is not None]
    return f"{min(v):.2f}..{max(v):.2f} cores" if v else "?"


def _speed_breakdown(wav: Path, fmt: str, ff_argv: list[str], p: Any, encode_s: float) -> dict[str, float]:
    """Time audiopipe's steps one by one, in this process, to show where the overhead is."""
    from audiopipe import runner
    from audiopipe.preparation.cache import file_sha256
    from audiopipe.preparation.encode import verify
    from audiopipe.preparation.formats import get_format
    from audiopipe.preparation.probe import probe
    from audiopipe.preparation.sniff import sniff

    def t(fn: Any) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    out = Path(ff_argv[-1][len("file:"):])
    runner._encoders.cache_clear()
    return {
        "startup+imports": median([timed([*AUDIOPIPE, "--version"])[0] for _ in range(1 if common.SMOKE else 3)]),
        "probe": t(lambda: probe(wav)),
        "sha256 (also with --no-cache)": t(lambda: file_sha256(wav)),
        "sniff input": t(lambda: sniff(wav)),
        "ffmpeg -encoders": t(runner.audio_encoders),
        "encode (ffmpeg median)": encode_s,
        "verify (sniff+probe)": t(lambda: verify(out, get_format(fmt), budget=BUDGET,
                                                 expected_duration=p.duration)),
    }


# --- 2. memory --------------------------------------------------------------------------------

def bench_memory(quick: bool) -> dict[str, Any]:
    long_min, cmp_min = (0.25, 0.25) if common.SMOKE else (10, 5) if quick else (120, 30)
    rows, details = [], {"long_minutes": long_min, "compare_minutes": cmp_min}
    work = fresh_dir(common.WORK / "memory")
    aim_mb = 120

    def show(label: str, r: dict[str, Any]) -> None:
        log(f"  {label}: sum {r['peak_sum_mb']:.0f} MB (python/root {r['peak_root_mb']:.0f}, ffmpeg "
            f"{r['peak_ffmpeg_mb']:.0f}, ffprobe {r['peak_ffprobe_mb']:.0f}), ru_maxrss(children) "
            f"{r['ru_maxrss_children_mb']:.0f} MB, {r['elapsed_s']:.1f} s, {r['samples']} samples")

    need = 5 * GB
    free = free_bytes(common.WORK)
    if free < need:
        msg = f"skipped the {long_min}-minute run: {free / GB:.1f} GB free under {common.WORK}, needs 5 GB"
        log("  " + msg)
        details["long"] = {"skipped": msg}
        rows.append([f"memory {long_min} min WAV", "peak RSS", "skipped", "-", "-", f"<= {aim_mb} MB",
                     "-"])
    else:
        t0 = time.perf_counter()
        wav = make_long_wav(long_min)
        log(f"  input: {wav.name} ({wav.stat().st_size / 1e9:.2f} GB; ready in "
            f"{time.perf_counter() - t0:.1f} s)")
        _, p = _plan_argv(wav, "ogg", work / "unused.ogg")
        wait_quiet(f"memory {long_min} min")
        ap = peak_rss([*AUDIOPIPE, "prepare", str(wav), "--out", str(work / "ap"), "--no-cache", "--quiet"])
        show(f"audiopipe prepare (ogg)     {long_min} min", ap)
        details["long"] = {"input": str(wav), "audiopipe": ap,
                           "plan": {"bitrate": p.bitrate, "channels": p.channels, "sample_rate": p.sample_rate}}
        ok = ap["peak_sum_mb"] <= aim_mb
        label = f"memory {long_min} min WAV (ogg {p.bitrate // 1000}k)"
        rows.append([label, "peak RSS, python+ffmpeg (sum)", fmt_mb(ap["peak_sum_mb"]), "-", "-",
                     f"<= {aim_mb} MB", verdict(ok)])
        rows.append([label, "peak RSS python / ffmpeg child",
                     f"{fmt_mb(ap['peak_root_mb'])} / {fmt_mb(ap['peak_ffmpeg_mb'])}", "-", "-", "-", "-"])
        rows.append([label, "ru_maxrss (RUSAGE_CHILDREN)", fmt_mb(ap["ru_maxrss_children_mb"]), "-", "-",
                     "-", "-"])
        rows.append([label, "wall time", fmt_s(ap["elapsed_s"]), "-", "-", "-", "-"])
        shutil.rmtree(work / "ap", ignore_errors=True)

    wav = make_long_wav(cmp_min)
    log(f"  input: {wav.name} ({wav.stat().st_size / 1e6:.0f} MB)")
    wait_quiet(f"memory {cmp_min} min")
    pyd = peak_rss([PY, str(BENCH / "naive_pydub.py"), str(wav), str(work / "pydub.mp3")])
    show(f"naive pydub -> mp3          {cmp_min} min", pyd)
    wait_quiet(f"memory {cmp_min} min")
    ap = peak_rss([*AUDIOPIPE, "prepare", str(wav), "--out", str(work / "ap30"), "--no-cache", "--quiet",
                   "--format", "mp3"])
    show(f"audiopipe prepare (mp3)     {cmp_min} min", ap)
    argv, p = _plan_argv(wav, "mp3", work / "ffmpeg.mp3")
    wait_quiet(f"memory {cmp_min} min")
    ff = peak_rss(argv)
    show(f"plain ffmpeg, audiopipe's argv {cmp_min} min", ff)
    details["compare"] = {"input": str(wav), "pydub": pyd, "audiopipe_mp3": ap, "ffmpeg_alone": ff,
                          "plan": {"bitrate": p.bitrate, "channels": p.channels, "sample_rate": p.sample_rate}}
    label = f"memory {cmp_min} min WAV (mp3)"
    rows.append([label, "peak RSS sum vs naive pydub", fmt_mb(ap["peak_sum_mb"]),
                 f"{fmt_mb(pyd['peak_sum_mb'])} (pydub)", f"{ap['peak_sum_mb'] / max(pyd['peak_sum_mb'], 1):.2f}x",
                 f"<= {aim_mb} MB", verdict(ap["peak_sum_mb"] <= aim_mb)])
    rows.append([label, "peak RSS sum vs ffmpeg alone", fmt_mb(ap["peak_sum_mb"]),
                 f"{fmt_mb(ff['peak_sum_mb'])} (ffmpeg)", f"{ap['peak_sum_mb'] / max(ff['peak_sum_mb'], 1):.2f}x",
                 "-", "-"])
    rows.append([label, "wall time vs naive pydub", fmt_s(ap["elapsed_s"]),
                 f"{fmt_s(pyd['elapsed_s'])} (pydub)", f"{ap['elapsed_s'] / pyd['elapsed_s']:.2f}x", "-", "-"])
    for f in list(work.glob("*.mp3")) + list(work.glob("*.ogg")):
        f.unlink()
    shutil.rmtree(work / "ap30", ignore_errors=True)
    return {"rows": rows, "details": details}


# --- the 40-file folder (parallel, cache) -----------------------------------------------------

FOLDER_EXTS = ("wav", "flac", "mp3", "m4a", "ogg")


def make_folder(quick: bool) -> tuple[Path, list[dict[str, Any]]]:
    n = 4 if common.SMOKE else 10 if quick else 40
    lo, hi = (3, 5) if common.SMOKE else (5, 12) if quick else (20, 90)
    rng = random.Random(20261129)
    folder = common.WORK / "inputs" / f"folder{n}"
    spec = []
    for i in range(n):
        ext = FOLDER_EXTS[i % len(FOLDER_EXTS)]
        dur = rng.randint(lo, hi)
        ch = rng.choice((1, 2))
        kind = rng.choice(("mix", "speech", "tone", "noise"))
        path = folder / f"{i:02d}_{kind}_{ch}ch.{ext}"
        make_source(kind, dur, ch, ext, seed=i + 1, dest=path)
        spec.append({"file": path.name, "ext": ext, "duration_s": dur, "channels": ch, "kind": kind})
    return folder, spec


def _json_lines(stdout: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]


def _summary(outcomes: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.get("action", "?")] = counts.get(o.get("action", "?"), 0) + 1
    return counts


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_parallel(quick: bool, reps: int) -> dict[str, Any]:
    folder, spec = make_folder(quick)
    total = sum(s["duration_s"] for s in spec)
    log(f"  input: {folder} ({len(spec)} files, {total / 60:.1f} min of audio; "
        f"{', '.join(str(sum(s['ext'] == e for s in spec)) + ' ' + e for e in FOLDER_EXTS)}); "
        f"{reps} run(s) per setting, interleaved")
    times: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    other: list[float | None] = []
    actions: dict[int, dict[str, int]] = {}
    ceilings = []
    for _ in range(reps):
        for jobs in (1, 2):
            wait_quiet("parallel")
            out = fresh_dir(common.WORK / "parallel" / f"jobs{jobs}")
            c0 = _cpu_children()
            t, proc, load = timed_load([*AUDIOPIPE, "prepare", str(folder), "--out", str(out), "--jobs",
                                        str(jobs), "--no-cache", "--json", "--quiet"])
            other.append(load)
            cpu[jobs].append(_cpu_children() - c0)
            times[jobs].append(t)
            outcomes = _json_lines(proc.stdout)
            actions[jobs] = _summary(outcomes)
            bad = [o for o in outcomes if not o.get("ok")]
            if len(outcomes) != len(spec) or bad:
                fail(f"parallel --jobs {jobs}: {len(outcomes)} outcomes for {len(spec)} files, {len(bad)} not ok"
                     + (f" (first: {bad[0].get('source')}: {bad[0].get('error')})" if bad else ""))
        wait_quiet("parallel ceiling")
        ceilings.append(_machine_ceiling())
    t1, t2 = median(times[1]), median(times[2])
    speedup = t1 / t2
    ceiling = {k: median([c[k] for c in ceilings]) for k in ceilings[0]}
    # The same encodes by plain ffmpeg, one after another: what --jobs 1 costs beyond encoding.
    plain = _plain_encodes(outcomes)
    per_file = (t1 - plain["wall_s"]) / len(spec)
    log(f"  the {plain['encodes']} encodes alone (plain ffmpeg, audiopipe's argv, one at a time): "
        f"{plain['wall_s']:.2f} s; --jobs 1 spends {per_file * 1000:.0f} ms per file beyond that "
        f"(start-up, probe, hash, sniff, verify, copies)")
    for jobs in (1, 2):
        log(f"  --jobs {jobs}: {median(times[jobs]):.2f} s {[f'{x:.2f}' for x in times[jobs]]}, CPU "
            f"{median(cpu[jobs]):.1f} s ({median(cpu[jobs]) / median(times[jobs]):.2f} cores busy), "
            f"actions {actions[jobs]}")
    log(f"  speed-up {speedup:.2f}x on {os.cpu_count()} vCPUs (other processes used {_loads(other)} "
        f"during these runs); this machine's own ceiling "
        f"(6 plain ffmpeg Opus encodes, 1 vs 2 at a time, median of "
        f"{len(ceilings)}): {ceiling['speedup']:.2f}x ({ceiling['serial_s']:.2f} s vs {ceiling['parallel_s']:.2f} s)")
    rows = [[f"parallel ({len(spec)} files)", "wall, --jobs 2 vs --jobs 1", fmt_s(t2), f"{fmt_s(t1)} (--jobs 1)",
             f"{speedup:.2f}x faster", f"machine ceiling {ceiling['speedup']:.2f}x",
             "smoke" if quick else verdict(speedup >= 0.9 * ceiling["speedup"])],
            [f"parallel ({len(spec)} files)", "wall, --jobs 1 vs its encodes by plain ffmpeg", fmt_s(t1),
             f"{fmt_s(plain['wall_s'])} (ffmpeg x{plain['encodes']})", f"{t1 / plain['wall_s']:.2f}x",
             f"{per_file * 1000:.0f} ms/file extra", "-"]]
    return {"rows": rows, "details": {"folder": str(folder), "files": spec, "reps": reps,
                                      "jobs1_s": times[1], "jobs2_s": times[2], "speedup": speedup,
                                      "cpu_s": cpu, "actions": actions, "machine_ceiling": ceiling,
                                      "foreign_cpu_cores": other,
                                      "plain_ffmpeg_serial": plain, "jobs1_overhead_per_file_s": per_file,
                                      "machine_ceiling_runs": ceilings}}


def _plain_encodes(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Re-run, with plain ffmpeg, every encode audiopipe's last run did (from its --json plans)."""
    from audiopipe.preparation.encode import build_argv
    from audiopipe.preparation.plan import EncodePlan

    work = fresh_dir(common.WORK / "parallel" / "plain")
    argvs = [build_argv(o["source"], EncodePlan(**o["plan"]), work / f"{i}.out")
             for i, o in enumerate(outcomes) if o.get("ok") and o.get("plan")]
    wait_quiet("plain encodes")
    t0 = time.perf_counter()
    for a in argvs:
        timed(a)
    return {"wall_s": time.perf_counter() - t0, "encodes": len(argvs)}


def _machine_ceiling(n: int = 6) -> dict[str, float]:
    """How much faster 2 processes at a time really are here: ``n`` identical plain ffmpeg Opus
    encodes run one at a time, then two at a time. (A "2-core" VM may deliver far less than 2x.)"""
    if common.SMOKE:
        n = 2
    src = make_source("mix", 10 if common.SMOKE else 60, 2)
    work = fresh_dir(common.WORK / "parallel" / "ceiling")
    argvs = [["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-c:a", "libopus", "-b:a", "96k",
              str(work / f"{i}.ogg")] for i in range(n)]
    t0 = time.perf_counter()
    for a in argvs:
        timed(a)
    serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(timed, argvs))
    parallel = time.perf_counter() - t0
    return {"serial_s": serial, "parallel_s": parallel, "speedup": serial / parallel, "encodes": n}


# --- 5. cache ---------------------------------------------------------------------------------

def bench_cache(quick: bool, reps: int) -> dict[str, Any]:
    folder, spec = make_folder(quick)
    cache_dir = common.WORK / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    env = dict(os.environ, AUDIOPIPE_CACHE_DIR=str(cache_dir))
    log(f"  input: {folder} ({len(spec)} files), AUDIOPIPE_CACHE_DIR={cache_dir} (cleared), --jobs 1")
    out1 = fresh_dir(common.WORK / "cache-out" / "first")
    cmd = [*AUDIOPIPE, "prepare", str(folder), "--json", "--quiet", "--out"]
    wait_quiet("cache")
    t1, proc1 = timed([*cmd, str(out1)], env=env)
    first = _json_lines(proc1.stdout)
    warm: list[float] = []
    for _ in range(reps):
        wait_quiet("cache")
        out2 = fresh_dir(common.WORK / "cache-out" / "second")
        t2, proc2 = timed([*cmd, str(out2)], env=env)
        warm.append(t2)
    second = _json_lines(proc2.stdout)
    hits = sum(1 for o in second if o.get("cached"))
    files1 = {p.relative_to(out1): sha256(p) for p in out1.rglob("*") if p.is_file()}
    files2 = {p.relative_to(out2): sha256(p) for p in out2.rglob("*") if p.is_file()}
    identical = files1 == files2
    t2 = median(warm)
    if not (hits == len(second) == len(spec) and identical):
        fail(f"cache: the second run had {hits} cache hits for {len(spec)} files ({len(second)} outcomes); "
             f"outputs identical to the first run's: {identical}")
    # what a cache hit still costs per file: audiopipe probes (ffprobe) and hashes before looking up
    from audiopipe.preparation.cache import file_sha256
    from audiopipe.preparation.probe import probe
    inputs = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    t0 = time.perf_counter()
    for p in inputs:
        probe(p)
    probe_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in inputs:
        file_sha256(p)
    hash_s = time.perf_counter() - t0
    startup = median([timed([*AUDIOPIPE, "--version"])[0] for _ in range(1 if common.SMOKE else 3)])
    log(f"  second run per file {1000 * t2 / len(spec):.0f} ms; of the {t2:.2f} s: ffprobe of every input "
        f"{probe_s:.2f} s, sha256 {hash_s:.2f} s, CLI start-up {startup:.2f} s")
    log(f"  first run {t1:.2f} s (actions {_summary(first)}); second run {t2:.2f} s "
        f"{[f'{x:.2f}' for x in warm]}: {hits}/{len(second)} cache hits, outputs identical: {identical}; "
        f"{t1 / t2:.1f}x faster")
    rows = [[f"cache ({len(spec)} files)", "wall, 2nd run (cache hits) vs 1st", fmt_s(t2), f"{fmt_s(t1)} (1st run)",
             f"{t1 / t2:.1f}x faster", "all hits, same bytes",
             verdict(hits == len(second) == len(spec) and identical)]]
    return {"rows": rows, "details": {"first_s": t1, "second_s": warm, "second_median_s": t2,
                                      "ratio": t1 / t2, "hits": hits, "files": len(spec),
                                      "outputs_identical": identical, "probe_all_inputs_s": probe_s,
                                      "sha256_all_inputs_s": hash_s, "cli_startup_s": startup,
                                      "cache_bytes": sum(p.stat().st_size for p in cache_dir.rglob("*")
                                                         if p.is_file())}}


# --- 4. first-fit -----------------------------------------------------------------------------

FIT_FORMATS = ("ogg", "mp3", "m4a", "aac")
FIT_KINDS = ("noise", "tone", "silence", "speech")
SHORTEST, LONGEST = 30.0, 3 * 3600.0


class _Recorder(threading.local):
    attempts: list[dict[str, Any]]


def _budget_use_row(results: list[dict[str, Any]]) -> list[str]:
    """How much of the budget the outputs use where the budget decided the bitrate (single files:
    a split's or trim's parts are sized for their own lengths), and how many took a fill pass. Silent
    sources are left out: no bitrate makes silence take bytes, so no budget is theirs to use."""
    limited = [r for r in results if r["budget_limited"] and r["parts"] == 1 and r["action"] == "transcoded"
               and r["kind"] != "silence"]
    if not limited:
        return ["budget use (prepare_file)", "no case limited by its budget", "-", "-", "-", ">= 92 %", "-"]
    uses = sorted(r["size"] / r["budget"] for r in limited)
    filled = sum(r["first_fit"] and r["passes"] > 1 for r in limited)
    low = sum(u < 0.92 for u in uses)
    return ["budget use (prepare_file)",
            f"min / median over {len(limited)} budget-limited (silence aside); filled {filled}; under 92 %: {low}",
            f"{100 * uses[0]:.1f} % / {100 * uses[len(uses) // 2]:.1f} %", "-", "-", ">= 92 %",
            "smoke" if len(limited) < 8 else verdict(low <= 0.05 * len(limited))]


def bench_firstfit(quick: bool) -> dict[str, Any]:
    """prepare_file() with budgets scaled down from 16 MB so each short input gets the bitrate a
    30 s .. 3 h recording would get; count how often the first encode fits."""
    # the fit loop calls encode and verify through its module's names: wrapped there to count attempts
    import audiopipe.preparation.transcode as prep
    from audiopipe.preparation.formats import get_format
    from audiopipe.preparation.pipeline import prepare_file
    from audiopipe.preparation.settings import PrepareSettings

    per = 1 if quick else 5  # cases per (format, source type)
    formats, kinds = (FIT_FORMATS[:2], FIT_KINDS[2:]) if common.SMOKE else (FIT_FORMATS, FIT_KINDS)
    rng = random.Random(4242)
    # inputs: per source type, a few (duration, channels) variants of 20..120 s
    variants: dict[str, list[Path]] = {}
    for k_i, kind in enumerate(kinds):
        variants[kind] = []
        for v in range(1 if quick else 4):
            dur = 8 if common.SMOKE else 20 if quick else rng.randint(20, 120)
            ch = 1 + (v + k_i) % 2
            variants[kind].append(make_source(kind, dur, ch, seed=10 + v))
    from audiopipe.preparation.probe import probe
    infos = {p: probe(p) for ps in variants.values() for p in ps}

    cases = []
    for f_i, fmt_name in enumerate(formats):
        fmt = get_format(fmt_name)
        for kind in kinds:
            for j in range(per):
                src = variants[kind][(j + f_i) % len(variants[kind])]
                info = infos[src]
                ch = min(info.audio.channels, 2)
                lo = max(fmt.floor, BUDGET * 8 / LONGEST)
                hi = min(fmt.ceiling(ch), BUDGET * 8 / SHORTEST)
                u = (j + rng.random()) / per  # stratified over the range
                target = lo * (hi / lo) ** u
                budget = max(4096, int(fmt.fixed_overhead + info.duration * target / 8))
                cases.append({"id": f"{fmt_name}-{kind}-{j}", "format": fmt_name, "kind": kind,
                              "source": src, "channels_in": ch, "duration_s": info.duration,
                              "target_bitrate": int(target), "as_if_duration_s": BUDGET * 8 / target,
                              "budget": budget})

    rec = _Recorder()
    real_encode, real_verify = prep.encode, prep.verify

    def encode(source: Any, p: Any, dest: Path, **kw: Any) -> Path:  # kw: progress, as prepare passes it
        rec.attempts.append({"bitrate": p.bitrate, "sample_rate": p.sample_rate, "channels": p.channels,
                             "expected_size": p.expected_size, "budget": p.budget, "duration": p.duration})
        return real_encode(source, p, dest, **kw)

    def verify(path: Path, fmt: Any, **kw: Any) -> Any:
        v = real_verify(path, fmt, **kw)
        rec.attempts[-1]["size"] = v.size
        return v

    def run(case: dict[str, Any]) -> dict[str, Any]:
        rec.attempts = []
        out = fresh_dir(common.WORK / "firstfit" / "out" / case["id"])
        settings = PrepareSettings(format=case["format"], max_size=case["budget"], cache=False)
        try:
            r = prepare_file(case["source"], out, settings)
            limited = r.plan is not None and r.plan.bitrate < r.plan.ceiling  # the budget decided the bitrate
            res = {"passes": r.passes, "first_fit": r.first_fit, "action": r.action, "size": r.outputs[0].size,
                   "budget_limited": limited,
                   "parts": len(r.outputs), "error": None}
        except Exception as exc:
            res = {"passes": len(rec.attempts), "first_fit": False, "budget_limited": False, "action": "failed",
                   "size": None, "error": str(exc)}
        shutil.rmtree(out, ignore_errors=True)
        return dict(case, source=str(case["source"]), attempts=rec.attempts, **res)

    prep.encode, prep.verify = encode, verify
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results = list(pool.map(run, cases))
        elapsed = time.perf_counter() - t0
    finally:
        prep.encode, prep.verify = real_encode, real_verify

    failed = [r for r in results if r["action"] == "failed"]
    if failed:
        fail(f"first-fit: {len(failed)} of {len(results)} prepare_file calls failed "
             f"(first: {failed[0]['id']}: {failed[0]['error']})")
    first_fit = [r for r in results if r["first_fit"] and r["action"] != "failed"]  # a fill pass is no miss
    pct = 100 * len(first_fit) / len(results)
    log(f"  {len(results)} cases ({len(formats)} formats x {len(kinds)} sources x {per}), "
        f"inputs 20-120 s, budgets scaled from 16 MB for {SHORTEST:.0f} s..{LONGEST / 3600:.0f} h; "
        f"{elapsed:.0f} s")
    log(f"  first encode fitted: {len(first_fit)}/{len(results)} = {pct:.1f} %  "
        f"(actions: {_summary(results)})")

    # The size model: first encode's actual size / plan.expected_size, per format (and per source).
    model: dict[str, Any] = {}
    for fmt_name in formats:
        ratios = [r["attempts"][0]["size"] / r["attempts"][0]["expected_size"] for r in results
                  if r["format"] == fmt_name and r["attempts"] and "size" in r["attempts"][0]]
        by_kind = {}
        for kind in kinds:
            rs = [r["attempts"][0]["size"] / r["attempts"][0]["expected_size"] for r in results
                  if r["format"] == fmt_name and r["kind"] == kind and r["attempts"]
                  and "size" in r["attempts"][0]]
            if rs:
                by_kind[kind] = {"mean": statistics.mean(rs), "max": max(rs), "min": min(rs)}
        if ratios:
            to_budget = [r["attempts"][0]["size"] / r["budget"] for r in results
                         if r["format"] == fmt_name and r["attempts"] and "size" in r["attempts"][0]]
            model[fmt_name] = {"n": len(ratios), "mean": statistics.mean(ratios), "max": max(ratios),
                               "min": min(ratios), "max_size_over_budget": max(to_budget),
                               "by_source": by_kind}
    for f, m in model.items():
        rs = [v for k, v in m["by_source"].items() if k != "silence"]
        m["mean_without_silence"] = statistics.mean(
            [r["attempts"][0]["size"] / r["attempts"][0]["expected_size"] for r in results
             if r["format"] == f and r["kind"] != "silence" and r["attempts"] and "size" in r["attempts"][0]]
        ) if rs else None
    model_rows = [[f, m["n"], f"{m['mean']:.3f}", f"{m['mean_without_silence']:.3f}", f"{m['min']:.3f}",
                   f"{m['max']:.3f}", f"{m['max_size_over_budget']:.3f}",
                   "  ".join(f"{k} {v['mean']:.3f}/{v['max']:.3f}" for k, v in m["by_source"].items())]
                  for f, m in model.items()]
    log("  size model, first encode: actual_size / plan.expected_size")
    log(indent(md_table(["format", "n", "mean", "mean w/o silence", "min", "max", "max size/budget",
                             "per source: mean/max"],
                         model_rows)))

    missed = [r for r in results if r not in first_fit]
    miss_rows = []
    for r in missed:
        a0 = r["attempts"][0] if r["attempts"] else {}
        size0 = a0.get("size")
        miss_rows.append([
            r["id"], f"{r['duration_s']:.0f} s/{r['channels_in']}ch", f"{r['as_if_duration_s'] / 60:.0f} min",
            f"{r['budget']:,}",
            f"{a0.get('bitrate', 0) // 1000}k/{a0.get('channels', '?')}ch/{a0.get('sample_rate', '?')}",
            f"{size0:,}" if size0 else "-",
            f"{100 * (size0 / r['budget'] - 1):+.1f} %" if size0 else "-",
            f"{size0 / a0['expected_size']:.3f}" if size0 else "-",
            r["passes"], r["action"] + (f": {r['error'][:60]}" if r["error"] else "")])
    if miss_rows:
        log("  cases whose first encode did not fit (overshoot = 1st encode vs budget):")
        log(indent(md_table(["case", "input", "as if 16 MB for", "budget", "1st plan", "1st size",
                             "overshoot", "actual/expected", "passes", "result"], miss_rows)))
    rows = [["first-fit (prepare_file)", f"first encode fitted, over {len(results)} cases", f"{pct:.1f} %",
             "-", "-", ">= 95 %", verdict(pct >= 95)], _budget_use_row(results)]
    for f, m in model.items():
        rows.append([f"size model {f}", "1st encode size/expected: mean, max; max size/budget",
                     f"{m['mean']:.3f}, {m['max']:.3f}; {m['max_size_over_budget']:.3f}", "-", "-", "-", "-"])
    return {"rows": rows, "details": {"cases": results, "first_fit_pct": pct, "size_model": model,
                                      "missed": [r["id"] for r in missed], "elapsed_s": elapsed}}


def indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line for line in text.splitlines())
