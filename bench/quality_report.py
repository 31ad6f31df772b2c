"""bench_quality.py's tables: one per format (each case against each plain command), the CPU runs, and
a summary row per format; plus the wall time each phase of the run took (where a run's time goes)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from common import md_table
from quality_measures import LSD, PESQ

NAMES = {"ogg": "Opus (`--format ogg`)", "mp3": "MP3 (`--format mp3`)", "m4a": "M4A, AAC (`--format m4a`)"}


class Phases:
    """Wall seconds spent in each phase of a run (sources, audiopipe, plain, measures, cpu)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def line(self) -> str:
        return ", ".join(f"{name} {s:.1f} s" for name, s in self.seconds.items())


def _ratio(p: dict[str, Any]) -> str:
    return f"{p['ratio']:.3f}" if p["matched"] else f"({p['ratio']:.3f})"


def _plain_cells(p: dict[str, Any]) -> list[str]:
    gap = f"{100 * p['size_match']:+.1f} %" + ("" if p["matched"] else ", not matched")
    return [f"{p['shown']} ({gap})", f"{p['score']:.2f}", _ratio(p)]


def format_table(fmt: str, cases: list[dict[str, Any]]) -> str:
    """Each case of one format: audiopipe's output and score, then each plain command's."""
    labels = [p["label"] for p in next((c["plains"] for c in cases if "plains" in c), [])]
    header = ["source", "budget (bytes)", "audiopipe size (use), passes", "its bitrate, rate", "measure", "audiopipe"]
    for label in labels:
        header += [f"{label} (size vs ours)", "score", "ratio"]
    rows = []
    for c in cases:
        row = [c["source"], f"{c['kbps']:g}k x {c['seconds']:.0f} s = {c['budget']:,}"]
        if "size" in c:
            passes = f"{c['passes']} pass{'es' if c['passes'] > 1 else ''}"
            if c["passes"] > 1:
                passes += " (filled)" if c["first_fit"] else " (re-planned)"
            row += [f"{c['size']:,} ({100 * c['use']:.1f} %), {passes}",
                    f"{(c['bitrate'] or 0) / 1000:.1f}k, {c['sample_rate'] / 1000:g} kHz"]
        if "failed" in c:
            row.append(f"**FAILED**: {c['failed']}")
        else:
            row += [c["metric"], f"{c['audiopipe']:.2f}"]
            for p in c["plains"]:
                row += _plain_cells(p)
        rows.append(row + [""] * (len(header) - len(row)))
    commands = "; ".join(f"{label}: `{cmd}`" for label, cmd in _commands(cases))
    return f"**{NAMES.get(fmt, fmt)}** against {commands}\n\n" + md_table(header, rows)


def _commands(cases: list[dict[str, Any]]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for c in cases:
        for p in c.get("plains", []):
            seen.setdefault(p["label"], p["command"])
    return list(seen.items())


def cpu_table(cpus: list[dict[str, Any]]) -> str:
    rows = []
    for r in cpus:
        what = f"{NAMES.get(r['format'], r['format'])}, {r['seconds'] / 60:.1f}-min speech WAV at {r['kbps']:g}k"
        if "failed" in r:
            rows.append([what, f"**FAILED**: {r['failed']}", "", "", ""])
            continue
        for p in r["plains"]:
            rows.append([what, f"{r['audiopipe_cpu']:.2f} s ({r['audiopipe_size']:,} B)",
                         f"{p['label']} {p['shown']}: {p['cpu']:.2f} s ({p['size']:,} B)", f"{p['ratio']:.3f}x",
                         f"{r['other_cores']:.2f}"])
    return md_table(["CPU (user+sys, median of the runs)", "audiopipe prepare", "plain command", "ratio",
                     "other processes (cores)"], rows)


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def summary_row(fmt: str, cases: list[dict[str, Any]], cpus: list[dict[str, Any]]) -> list[str]:
    done = [c for c in cases if "failed" not in c]
    prepared = [c for c in cases if "size" in c]  # audiopipe's part ran (over budget or not)
    first = sum(c["first_fit"] for c in prepared)  # a fill's pass (to use more of the budget) is no miss
    uses = [c["use"] for c in prepared]
    speech = [c["use"] for c in prepared if c["source"] != "music"]
    use = (f"{100 * min(uses):.1f} % / {100 * statistics.median(uses):.1f} %"
           + (f" ({100 * min(speech):.1f} %)" if speech else "")) if uses else "-"
    quality = []
    for metric in (PESQ, LSD):
        by_label: dict[str, list[float]] = {label: [] for label, _ in _commands(cases)}
        compared = dict.fromkeys(by_label, 0)
        for p in (p for c in done if c["metric"] == metric for p in c["plains"]):
            compared[p["label"]] += 1
            if p["matched"]:
                by_label[p["label"]].append(p["ratio"])
        quality.append("; ".join(f"{label}: {_spread(v)}" + (f" ({len(v)} of {compared[label]} matched)"
                                                               if len(v) < compared[label] else "")
                                 for label, v in by_label.items() if v) or "-")
    cpu = "; ".join(f"{p['ratio']:.3f}x vs {p['label']}" for r in cpus if r["format"] == fmt and "failed" not in r
                    for p in r["plains"]) or "-"
    failed = len(cases) - len(done) + sum("failed" in r for r in cpus if r["format"] == fmt)
    return [NAMES.get(fmt, fmt), f"{first}/{len(prepared)}", use, *quality, cpu,
            f"**{failed} FAILED**" if failed else "0"]


def report(header: str, cases: list[dict[str, Any]], cpus: list[dict[str, Any]], phases: Phases) -> str:
    formats = list(dict.fromkeys(c["format"] for c in cases))
    parts = [header, ""]
    for fmt in formats:
        parts += [format_table(fmt, [c for c in cases if c["format"] == fmt]), ""]
    parts += [cpu_table(cpus), "", "Summary (ratios > 1: audiopipe's output is the better one at the same size; "
              "only cases whose sizes matched within 3 % count):", "",
              md_table(["format", "first encode fits", "budget use: min / median (speech min)",
                        "speech PESQ-WB, audiopipe / plain: median (range)", "music LSD, plain / audiopipe",
                        "CPU, audiopipe / plain", "failed"],
                       [summary_row(fmt, [c for c in cases if c["format"] == fmt], cpus) for fmt in formats]),
              "", "PESQ-WB: MOS-LQO, higher is better; LSD: 1/3-octave log-spectral distance in dB, lower is better "
              "(a proxy, see bench/quality_measures.py). A ratio in parentheses compares files whose sizes differ "
              "by more than 3 % (the plain command could not reach audiopipe's size). R in a command: audiopipe's "
              "sample rate in that case (the column \"its bitrate, rate\").",
              f"Wall time by phase: {phases.line()}."]
    return "\n".join(parts)
