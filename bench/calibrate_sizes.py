"""Payload against target, per content and bitrate: the numbers behind formats.py's factor bands.

    .venv/bin/python bench/calibrate_sizes.py --format mp3     # LAME's ABR under 28k, ~2 min
    .venv/bin/python bench/calibrate_sizes.py --format m4a     # native AAC -b:a, 16-256k, ~9 min
    .venv/bin/python bench/calibrate_sizes.py --format mp3 --bitrates 36,48,64 --content voices   # ABR above 28k
    .venv/bin/python bench/calibrate_sizes.py --format mp3 --control cbr --bitrates 8,16,64         # the CBR steps
    .venv/bin/python bench/calibrate_sizes.py --quick          # 12-s sources, mp3 and m4a, 3 bitrates (<10 s)
    .venv/bin/python bench/calibrate_sizes.py --prepare --format mp3   # end to end: first fit, budget use

Not a test. For each source and bitrate it makes the plan audiopipe would (the sample rate and channels
the planner picks for that bitrate: a stereo source is made mono under the format's ``stereo_min``),
encodes it with audiopipe's own ffmpeg command line (``encode.build_argv``) and measures:

- payload / target: the codec's bytes (the sum of the packets ffprobe lists, less ADTS's 7-byte
  headers) x 8 / seconds / the nominal bitrate: what ``TargetFormat.factor_bands`` model;
- size / expected: the whole file against ``plan.expected_size`` (the container and padding too);
  the first encode fits when it is at most 1 / HEADROOM (1.015).

Then, per factor band of the format's size model and per content class (a mono source is sized as
speech, a stereo one is not: ``plan.likely_speech``), the lowest and highest payload / target seen
(and which source gave the highest), the model's factor, and what a first encode sized by it would use
of its budget (HEADROOM x measured / model; over 100 % is a first encode that does not fit). Rounding
the bitrate to what the encoder takes (LAME: whole kbit/s) is not in it.

Contents (made here, cached under WORK/quality; the speech and music of bench/quality_sources.py):
``speech`` (espeak-ng, six voices in turn, 0.2-1.2 s pauses, mono 48 kHz), ``sparse`` (the same with
2.5-4.5 s pauses), ``music`` (a stereo 44.1 kHz chord progression, arpeggio and hi-hat),
``speech-stereo`` (the speech in both channels: a voice recorded in stereo, which the planner sizes as
music), ``music-mono`` (the music mixed down to mono, which it sizes as speech), ``noisy`` (the speech
over a louder room noise), ``voices`` (each of the six voices alone reading every sentence, about 45 s:
a voice message is one speaker, and encoders overshoot some voices far more than others), ``dense``
(four 15-s clips of mixed voices with 0.05-0.3 s pauses). Checked, or the run fails: every output has
the sample rate and channels planned (LAME keeps the rate it is given, so an MPEG version that does not
take the bitrate would show here).

``--prepare``: instead, the whole pipeline (``prepare_file``, cache off) on each source at a budget of
each bitrate x its length, as bench_quality does: whether the first encode fit, and the share of the
budget the file used. Writes OUT/calibrate_sizes[-prepare][-quick].md and .json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import common
from common import (
    _cached,
    add_dir_options,
    fail,
    ffmpeg,
    ffmpeg_version,
    fresh_dir,
    log,
    md_table,
    run_main,
    set_dirs,
)
from quality_sources import SENTENCES, VOICES, espeak_bin, make_music, make_speech

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from audiopipe.preparation.encode import encode  # noqa: E402
from audiopipe.preparation.formats import FORMATS, TargetFormat  # noqa: E402
from audiopipe.preparation.pipeline import prepare_file  # noqa: E402
from audiopipe.preparation.plan import HEADROOM, EncodePlan, choose_sample_rate, expected_size  # noqa: E402
from audiopipe.preparation.settings import PrepareSettings  # noqa: E402

K = 1000
BITRATES = {  # kbit/s; each content gets those up to the format's ceiling for its channels
    "mp3": (8, 9, 10, 11, 12, 13, 14, 16, 18, 20, 22, 24, 26, 27),  # where the planner takes LAME's ABR
    "m4a": (16, 18, 20, 22, 24, 26, 28, 30, 32, 36, 40, 44, 48, 52, 56, 60, 64, 72, 80, 96, 112, 128, 160,
            192, 256),
    "ogg": (6, 7, 9, 11, 13, 14, 16, 20, 28, 40, 64, 96, 128),
}
BITRATES["aac"] = BITRATES["m4a"]
PREPARE_BITRATES = {"mp3": (10, 12, 14, 18, 20, 22, 26, 30, 36, 44, 72),
                    "m4a": (16, 20, 24, 28, 30, 34, 40, 44, 48, 64, 80, 96, 128), "aac": (16, 24, 30, 40, 64, 96),
                    "ogg": (8, 10, 12, 16, 24, 40)}
QUICK_BITRATES = {"mp3": (10, 16, 24), "m4a": (24, 48, 96), "aac": (24, 48, 96), "ogg": (8, 16, 48)}
CONTENTS = ("speech", "sparse", "music", "speech-stereo", "music-mono", "noisy", "voices", "dense")
ADTS_HEADER = 7


def make_content(name: str, seconds: float) -> list[tuple[str, Path]]:
    """The source(s) a content name stands for, with their labels (``voices`` and ``dense`` are several)."""
    speech = make_speech(seconds, (0.2, 1.2), 7)
    simple = {"speech": lambda: speech, "sparse": lambda: make_speech(seconds, (2.5, 4.5), 8),
              "music": lambda: make_music(seconds)}
    if name in simple:
        return [(name, simple[name]())]
    if name == "voices":
        return [(f"voice {v}", one_voice(v)) for v in VOICES]
    if name == "dense":
        return [(f"dense {seed}", make_speech(15, (0.05, 0.3), seed)) for seed in (101, 102, 103, 104)]
    path = common.WORK / "quality" / f"{name}_{seconds:g}s.wav"
    if name == "speech-stereo":
        args = ["-i", str(speech), "-ac", "2"]
    elif name == "music-mono":
        args = ["-i", str(make_music(seconds)), "-ac", "1"]
    elif name == "noisy":
        room = f"anoisesrc=c=brown:a=0.03:r=48000:s=5:d={seconds + 5}[n]"
        args = ["-i", str(speech), "-filter_complex", f"{room};[0:a][n]amix=inputs=2:normalize=0:duration=first"]
    else:
        fail(f"unknown content {name!r}: choose from {', '.join(CONTENTS)}")
    return [(name, _cached(path, {"kind": name, "seconds": seconds, "v": 1},
                           lambda tmp: ffmpeg([*args, "-c:a", "pcm_s16le", *common.CLEAN, str(tmp)])))]


def one_voice(voice: str) -> Path:
    """One espeak-ng voice reading every sentence at 170 words a minute, 0.3-0.8 s pauses (about 45 s):
    a voice message is one speaker, and LAME's ABR overshoots some voices far more than others."""
    path = common.WORK / "quality" / f"voice_{voice.replace('+', '_')}.wav"

    def build(tmp: Path) -> None:
        clips = fresh_dir(common.WORK / "quality" / "voice-clips")
        inputs, graph = [], []
        for i, sentence in enumerate(SENTENCES):
            clip = clips / f"c{i}.wav"
            subprocess.run([espeak_bin(), "-v", voice, "-s", "170", "-w", str(clip), sentence], check=True,
                           capture_output=True, stdin=subprocess.DEVNULL)
            inputs += ["-i", str(clip)]
            graph.append(f"[{i}:a]aresample=48000,apad=pad_dur={0.3 + 0.5 * ((i * 7) % 10) / 10:.2f}[a{i}]")
        n = len(SENTENCES)
        graph += ["".join(f"[a{i}]" for i in range(n)) + f"concat=n={n}:v=0:a=1[s]",
                  "anoisesrc=c=pink:a=0.003:r=48000:s=3:d=120[n]",
                  "[s][n]amix=inputs=2:normalize=0:duration=first[out]"]
        ffmpeg([*inputs, "-filter_complex", ";".join(graph), "-map", "[out]", "-ac", "1", "-c:a", "pcm_s16le",
                *common.CLEAN, str(tmp)])

    return _cached(path, {"kind": "voice", "voice": voice, "v": 1}, build)


@dataclass(frozen=True)
class Probed:
    rate: int
    channels: int
    seconds: float
    packets: int
    packet_bytes: int


def probe(path: Path) -> Probed:
    """The first audio stream's rate and channels, the file's duration, its packets and their bytes
    (one ffprobe: this bench's time goes into these calls)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "stream=sample_rate,channels:format=duration:packet=size", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    stream, sizes = got["streams"][0], [int(p["size"]) for p in got.get("packets", [])]
    return Probed(int(stream["sample_rate"]), int(stream["channels"]), float(got["format"]["duration"]),
                  len(sizes), sum(sizes))


def measure(fmt: TargetFormat, source: Path, src: Probed, kbps: int, dest: Path) -> dict[str, Any]:
    """Encode ``source`` at ``kbps`` as audiopipe would plan it; its payload and size against the model."""
    bitrate = kbps * K
    channels = 1 if src.channels == 1 or bitrate < fmt.stereo_min else 2
    rate = choose_sample_rate(fmt, bitrate, channels, src.rate)
    speech = src.channels == 1  # plan.likely_speech without a voice note
    application = "voip" if fmt.speech_below is not None and bitrate / channels <= fmt.speech_below else "audio"
    plan = EncodePlan(format=fmt.name, encoder=fmt.encoder, muxer=fmt.muxer, codec=fmt.codec, bitrate=bitrate,
                      sample_rate=rate, channels=channels, duration=src.seconds, application=application,
                      rate_control=fmt.rate_control, speech=speech)
    encode(source, plan, dest)
    got = probe(dest)
    if (got.rate, got.channels) != (rate if fmt.fixed_sample_rate is None else got.rate, channels):
        fail(f"{fmt.name} {kbps}k: planned {rate} Hz x {channels} ch, the output has {got.rate} Hz x {got.channels}")
    payload = got.packet_bytes - (ADTS_HEADER * got.packets if fmt.muxer == "adts" else 0)
    size = dest.stat().st_size
    return {"kbps": kbps, "rate": rate, "channels": channels, "speech": speech, "size": size, "payload": payload,
            "ratio": payload * 8 / src.seconds / bitrate,
            "size_vs_expected": size / expected_size(fmt, bitrate, rate, src.seconds, speech=speech)}


def band_rows(fmt: TargetFormat, rows: list[dict[str, Any]]) -> list[list[str]]:
    """Per content class and factor band: the measured payload / target against the model's factor."""
    out = []
    for speech in (True, False):
        edges = [0] + [below for below, _ in fmt.bands(speech)] + [10**9]
        factors = [f for _, f in fmt.bands(speech)] + [fmt.bitrate_factor]
        for (low, below), factor in zip(itertools.pairwise(edges), factors, strict=True):
            seen = [r for r in rows if r["speech"] == speech and low <= r["kbps"] * K < below]
            if not seen:
                continue
            lo, hi = min(r["ratio"] for r in seen), max(r["ratio"] for r in seen)
            worst = max(r["size_vs_expected"] for r in seen)
            span = f"{low // K}-{below // K}k" if below < 10**9 else f"{low // K}k+"
            top = max(seen, key=lambda r: r["ratio"])
            out.append(["speech (mono source)" if speech else "other (stereo source)", span,
                        f"{len({r['content'] for r in seen})}, top: {top['content']} {top['kbps']}k",
                        f"{lo:.3f}-{hi:.3f}", f"{factor:.3f}",
                        f"{100 * HEADROOM * lo / factor:.1f}-{100 * HEADROOM * hi / factor:.1f} %",
                        f"{worst:.3f}" + (" OVER" if worst * HEADROOM > 1 else "")])
    return out


def calibrate(name: str, control: str | None, contents: list[str], kbps: list[int],
              seconds: float) -> tuple[str, list[dict[str, Any]]]:
    fmt = FORMATS[name].in_control(control) if control else FORMATS[name].between_steps or FORMATS[name]
    if control and fmt.rate_control != control:
        fail(f"{name} has no {control} rate control (it has {FORMATS[name].rate_control})")
    rows: list[dict[str, Any]] = []
    table = []
    for label, source in [made for content in contents for made in make_content(content, seconds)]:
        src = probe(source)
        row = [label]
        for k in kbps:
            if k * K > FORMATS[name].ceiling(src.channels) or k * K < fmt.floor:  # (MP3's ABR: above its own too)
                row.append("")
                continue
            m = measure(fmt, source, src, k, common.WORK / "calibrate" / f"out.{fmt.extension}")
            rows.append(dict(m, content=label))
            row.append(f"{m['ratio']:.3f}" + ("" if m["channels"] == 1 else " s"))
        table.append(row)
        log(f"  {name} {label}: done")
    sizes = [r["size_vs_expected"] for r in rows]
    title = f"{name} ({fmt.rate_control}), {seconds:g}-s sources"
    return "\n".join([
        f"### {title}", "",
        md_table([f"payload / target{' (s: stereo output)' if any(r['channels'] == 2 for r in rows) else ''}",
                  *[f"{k}k" for k in kbps]], table), "",
        md_table(["content class", "band", "sources, the top one", "payload / target", "model", "first-encode use",
                  "size / expected, max"], band_rows(fmt, rows)), "",
        f"size / expected over all: {min(sizes):.3f}-{max(sizes):.3f} (median {statistics.median(sizes):.3f}); "
        f"the first encode fits up to {1 / HEADROOM:.3f}", "",
    ]), rows


def prepared(name: str, contents: list[str], kbps: list[int], seconds: float) -> tuple[str, list[dict[str, Any]]]:
    """The whole pipeline (prepare_file) at a budget of each bitrate x each source's length: how often
    the first encode fits, and how much of the budget the file uses."""
    rows: list[dict[str, Any]] = []
    table = []
    for label, source in [made for content in contents for made in make_content(content, seconds)]:
        length, row = probe(source).seconds, [label]
        for k in kbps:
            budget = int(length * k * K / 8)
            result = prepare_file(source, fresh_dir(common.WORK / "calibrate" / "prepared"),
                                  PrepareSettings(format=name, max_size=budget, cache=False))
            if len(result.outputs) != 1 or result.plan is None:
                fail(f"{label} at {budget:,} bytes came out as {result.action} in {len(result.outputs)} parts")
            use, control = result.outputs[0].size / budget, result.plan.rate_control
            first_fit = getattr(result, "first_fit", result.passes == 1)  # (a fill's pass is no miss)
            rows.append({"content": label, "kbps": k, "budget": budget, "passes": result.passes, "use": use,
                         "first_fit": first_fit, "bitrate": result.plan.bitrate, "rate_control": control})
            passes = "" if result.passes == 1 else f" ({result.passes}{'' if first_fit else '!'})"
            row.append(f"{100 * use:.0f}{passes}{' a' if name == 'mp3' and control == 'abr' else ''}")
        table.append(row)
        log(f"  {name} {label}: prepared")
    uses = [r["use"] for r in rows]
    return "\n".join([
        f"### {name}: prepare_file at a budget of bitrate x length", "",
        md_table(["budget use, % (passes if over 1; !: the first was over)" + (", a: ABR" if name == "mp3" else ""),
                  *[f"{k}k" for k in kbps]], table), "",
        f"first encode fits: {sum(r['first_fit'] for r in rows)}/{len(rows)}; one encode: "
        f"{sum(r['passes'] == 1 for r in rows)}/{len(rows)}; budget use min {min(uses):.1%}, "
        f"median {statistics.median(uses):.1%}; at least 92 %: {sum(u >= 0.92 for u in uses)}/{len(uses)}", "",
    ]), rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--format", action="append", choices=sorted(FORMATS.keys() - {"amr"}),
                    help="repeatable (default: mp3 and m4a)")
    ap.add_argument("--control", choices=("cbr", "abr", "cvbr"), help="the rate control (default: the format's "
                    "sized by factor bands: MP3's ABR, AAC's -b:a, Opus's constrained VBR)")
    ap.add_argument("--content", action="append", choices=CONTENTS,
                    help="repeatable (default: all of them; speech and music with --quick)")
    ap.add_argument("--bitrates", help="kbit/s, comma-separated (default: a grid over the format's range)")
    ap.add_argument("--seconds", type=float, default=None, help="source length (default 120; 12 with --quick)")
    ap.add_argument("--quick", action="store_true", help="12-s speech and music, 3 bitrates a format")
    ap.add_argument("--prepare", action="store_true", help="instead: prepare_file at a budget of bitrate x "
                    "length; first-encode fits and budget use (default bitrates: PREPARE_BITRATES)")
    add_dir_options(ap)
    args = ap.parse_args()
    set_dirs(args.work, args.out)
    formats = args.format or ["mp3", "m4a"]
    contents = args.content or (["speech", "music"] if args.quick else list(CONTENTS))
    seconds = args.seconds or (12.0 if args.quick else 120.0)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"
    cmd = " ".join([".venv/bin/python bench/calibrate_sizes.py", *sys.argv[1:]])
    parts = [f"`{cmd}` ({datetime.now(timezone.utc):%Y-%m-%d}, git {head}, {ffmpeg_version()})", ""]
    raw: dict[str, Any] = {"command": cmd, "git_head": head}
    for name in formats:
        grid = PREPARE_BITRATES if args.prepare else QUICK_BITRATES if args.quick else BITRATES
        kbps = [int(x) for x in args.bitrates.split(",")] if args.bitrates else list(grid[name])
        text, rows = (prepared(name, contents, kbps, seconds) if args.prepare
                      else calibrate(name, args.control, contents, kbps, seconds))
        parts.append(text)
        raw[name] = rows
    text = "\n".join(parts)
    print(text)
    common.OUT.mkdir(parents=True, exist_ok=True)
    stem = "calibrate_sizes" + ("-prepare" if args.prepare else "") + ("-quick" if args.quick else "")
    (common.OUT / f"{stem}.md").write_text(text + "\n")
    (common.OUT / f"{stem}.json").write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    run_main("calibrate_sizes", main)
