"""The sources bench_quality.py measures on, made here and cached under WORK/quality: speech spoken by
espeak-ng (several voices, rates and pitches, with pauses, over a faint noise floor) and a stereo
music-like signal from lavfi; and the two ffprobe questions the bench asks of a file."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import common
from common import _cached, fail, ffmpeg, fresh_dir

SENTENCES = (
    "Hello, it's Maria from the clinic. Your appointment on Thursday has moved to half past ten.",
    "Please call me back when you get this message; it is about the delivery.",
    "We moved the meeting to four o'clock, and the room is on the second floor.",
    "The quick brown fox jumps over the lazy dog, twice, before breakfast.",
    "Your order number is seven, three, nine, two. It should arrive by Friday.",
    "Thanks again for yesterday. The children loved the museum, especially the dinosaurs.",
    "If the gate is locked, ring the bell on the left and wait for the porter.",
    "Reminder: the invoice for October is overdue. Reply to this message if you have already paid.",
)
VOICES = ("en", "en-us+f3", "en-gb-scotland+m3", "en-us+f2", "en+m5", "en-029+f4")

def espeak_bin() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        fail("espeak-ng is not installed (make system-deps installs it; or apt-get install espeak-ng)")
    return found


def make_speech(seconds: float, pauses: tuple[float, float], seed: int) -> Path:
    """Sentences in turn by several voices, rates and pitches, with pauses, over a faint noise floor."""
    name = f"speech_{seconds:g}s_p{pauses[0]:g}-{pauses[1]:g}_s{seed}.wav"
    spec = {"kind": "espeak", "seconds": seconds, "pauses": pauses, "seed": seed, "v": 1}

    def build(tmp: Path) -> None:
        rng = random.Random(seed)
        clips = fresh_dir(common.WORK / "quality" / f"clips-{seed}-{pauses[0]:g}")
        inputs, graph, total, i = [], [], 0.0, 0
        while total < seconds:
            clip = clips / f"c{i}.wav"
            argv = [espeak_bin(), "-v", VOICES[i % len(VOICES)], "-s", str(rng.randint(135, 195)),
                    "-p", str(rng.randint(30, 70)), "-w", str(clip), SENTENCES[rng.randrange(len(SENTENCES))]]
            subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL)
            pause = rng.uniform(*pauses)
            total += wav_seconds(clip) + pause
            inputs += ["-i", str(clip)]
            graph.append(f"[{i}:a]aresample=48000,apad=pad_dur={pause:.2f}[a{i}]")
            i += 1
        joined = "".join(f"[a{k}]" for k in range(i))
        graph.append(f"{joined}concat=n={i}:v=0:a=1[s]")
        graph.append(f"anoisesrc=c=pink:a=0.003:r=48000:s={seed}:d={seconds + 60}[n]")
        graph.append("[s][n]amix=inputs=2:normalize=0:duration=first[out]")
        ffmpeg([*inputs, "-filter_complex", ";".join(graph), "-map", "[out]", "-t", f"{seconds}", "-ac", "1",
                "-ar", "48000", "-c:a", "pcm_s16le", *common.CLEAN, str(tmp)])
        shutil.rmtree(clips, ignore_errors=True)

    return _cached(common.WORK / "quality" / name, spec, build)


def make_music(seconds: float) -> Path:
    """Stereo: a chord that changes every 2 s, an arpeggio, and hi-hat noise on every quarter second."""
    name = f"music_{seconds:g}s.wav"

    def channel(label: str, detune: float, pan: float) -> str:
        step = "pow(2,floor(mod(t,8)/2)*3/12)"
        chord = "+".join(f"{a}*sin(2*PI*{f * detune}*{step}*t)" for f, a in ((220, 0.15), (277.2, 0.1), (329.6, 0.08)))
        arp = f"0.06*sin(2*PI*{880 * detune}*pow(2,floor(mod(4*t,4))*4/12)*t)*exp(-6*mod(t,0.25))"
        return (f"aevalsrc='{pan}*({chord}+{arp})':s=44100:d={seconds}[{label}t];"
                f"anoisesrc=c=white:a=0.25:r=44100:d={seconds}:s={int(detune * 100)},highpass=f=4000,"
                f"volume='exp(-30*mod(t,0.25))':eval=frame[{label}h];"
                f"[{label}t][{label}h]amix=inputs=2:normalize=0[{label}]")

    graph = f"{channel('l', 1.0, 1.0)};{channel('r', 1.003, 0.8)};[l][r]join=inputs=2:channel_layout=stereo[out]"
    return _cached(common.WORK / "quality" / name, {"kind": "music", "seconds": seconds, "v": 1},
                   lambda tmp: ffmpeg(["-filter_complex", graph, "-map", "[out]", "-t", f"{seconds}",
                                       "-c:a", "pcm_s16le", *common.CLEAN, str(tmp)]))


def looped(source: Path, seconds: float) -> Path:
    name = f"{source.stem}_looped_{seconds:g}s.wav"
    return _cached(common.WORK / "quality" / name, {"kind": "loop", "of": source.name, "seconds": seconds},
                   lambda tmp: ffmpeg(["-stream_loop", "-1", "-i", str(source), "-t", f"{seconds}",
                                       "-c:a", "pcm_s16le", *common.CLEAN, str(tmp)]))


def channels_of(path: Path) -> str:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=channels",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip().strip(",")


def wav_seconds(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout)
