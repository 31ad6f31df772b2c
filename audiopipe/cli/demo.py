"""``make demo``: the main job end to end on local defaults.

Generates a folder of recordings (several formats, one too large to send as it is) and a contacts
CSV, starts the sandbox, runs ``audiopipe batch`` with its progress bars and summary, runs it again
to show that nothing is resent, lists what the sandbox received, and stops the sandbox.
Everything lives under ``./demo`` (or the folder given as the first argument).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from audiopipe.runner import ffmpeg_base, run

WORKSPACE = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b"
CONTACTS = [
    ("Ada Lovelace", "c0a8e1f2-0000-4000-8000-000000000001"),
    ("Grace Hopper", "c0a8e1f2-0000-4000-8000-000000000002"),
    ("Alan Turing", "c0a8e1f2-0000-4000-8000-000000000003"),
    ("Katherine Johnson", "c0a8e1f2-0000-4000-8000-000000000004"),
]

# name, seconds, ffmpeg output options; "promo.mp3" is 320 kbit/s for 7 minutes: ~16.8 MB, over the
# 16 MB budget although the API takes its type, so it must be re-encoded to fit.
RECORDINGS = [
    ("welcome.wav", 20, ["-ac", "1", "-ar", "44100", "-c:a", "pcm_s16le"]),
    ("weekly-update.flac", 45, ["-ac", "2", "-ar", "48000", "-c:a", "flac"]),
    ("reminder.m4a", 15, ["-ac", "1", "-c:a", "aac", "-b:a", "64k", "-f", "ipod"]),
    ("interview-clip.mp4", 12, None),
    ("old-note.ogg", 25, ["-ac", "1", "-c:a", "libvorbis", "-q:a", "3"]),
    ("promo.mp3", 420, ["-ac", "2", "-c:a", "libmp3lame", "-b:a", "320k"]),
]


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def make_recordings(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, seconds, opts in RECORDINGS:
        dest = folder / name
        if dest.exists():
            continue
        # a voice-like signal: a wobbling tone over soft noise, so encoders have real work to do
        src = (f"sine=f=220:d={seconds}[a];anoisesrc=d={seconds}:c=pink:a=0.05:seed=7[b];"
               f"[a]volume=0.4,tremolo=f=3:d=0.6[c];[c][b]amix=inputs=2[out]")
        if opts is None:  # a video with an audio track
            argv = [*ffmpeg_base(), "-f", "lavfi", "-i", f"testsrc=size=160x120:rate=10:d={seconds}",
                    "-filter_complex", src, "-map", "0:v", "-map", "[out]",
                    "-c:v", "mpeg4", "-c:a", "aac", "-shortest"]
        else:
            argv = [*ffmpeg_base(), "-filter_complex", src, "-map", "[out]", *opts]
        run([*argv, str(dest)], timeout=300, what="ffmpeg (demo recording)")
    with open(folder / "README.txt", "w") as f:  # not audio: the batch must skip it quietly
        f.write("Recordings for the audiopipe demo.\n")


def make_contacts(path: Path) -> None:
    lines = ["name,contact_id,workspace_id,note"]
    for name, cid in CONTACTS:
        lines.append(f"{name},{cid},{WORKSPACE},demo")
    lines.append("Broken Row,not-a-uuid,,this row is reported and skipped")
    path.write_text("\n".join(lines) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the sandbox exited early; see its messages above")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit("the sandbox did not start in time")


def stop_sandbox(sandbox: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the sandbox stops cleanly on it), then SIGKILL after 10 s."""
    sandbox.send_signal(signal.SIGTERM)
    try:
        sandbox.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sandbox.kill()


def fresh_start(root: Path) -> None:
    """A fresh run every time: new ledger, new sandbox, same recordings. The recordings' note of their
    ledger goes with the ledger, or the new one would be refused."""
    for sub in ("sandbox", "state", "report.csv", "recordings/.audiopipe-ledger"):
        p = root / sub
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def show_received(exe: list[str], root: Path, env: dict[str, str]) -> tuple[int, int]:
    """What the sandbox stored, per contact and per file; returns (messages, sent twice)."""
    listing = subprocess.run([*exe, "sandbox", "--list", "--data", str(root / "sandbox")],
                             env=env, capture_output=True, text=True, check=True)
    messages = json.loads(listing.stdout)
    per_contact = Counter(m["contact_id"] for m in messages)
    names = {cid: name for name, cid in CONTACTS}
    for cid, n in sorted(per_contact.items()):
        print(f"   {names.get(cid, cid):<20} {n} messages")
    by_file = Counter((m["file_name"], m["mime"], m["size"]) for m in messages)
    for (name, mime, size), n in sorted(by_file.items()):
        print(f"   {name:<26} {mime:<12} {size:>10,} bytes  x{n}")
    dupes = [k for k, n in Counter((m["contact_id"], m["sha256"]) for m in messages).items() if n > 1]
    print(f"   {len(messages)} messages stored, {len(dupes)} sent twice")
    return len(messages), len(dupes)


def run_demo(exe: list[str], root: Path, env: dict[str, str]) -> bool:
    """Steps 3 to 6, with the sandbox running: the batch twice, what arrived, the status."""
    batch = [*exe, "batch", str(root / "recordings"), "--contacts", str(root / "contacts.csv"),
             "--campaign", "demo", "--report", str(root / "report.csv")]
    say("3. audiopipe batch: prepare each file once, send to every contact")
    print("   $ audiopipe batch " + " ".join(batch[4:]), flush=True)
    first = subprocess.run(batch, env=env)
    print(f"   exit status {first.returncode} (1: the broken CSV row was reported and skipped)")
    say("4. the same command again (as cron would): nothing is sent twice")
    second = subprocess.run(batch, env=env)
    print(f"   exit status {second.returncode}")
    say("5. what the sandbox received")
    messages, dupes = show_received(exe, root, env)
    print(f"   report: {root / 'report.csv'}")
    say("6. audiopipe status")
    subprocess.run([*exe, "status", "--campaign", "demo"], env=env)
    return second.returncode == first.returncode and not dupes and messages == len(CONTACTS) * len(RECORDINGS)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "demo").absolute()
    recordings = root / "recordings"
    contacts = root / "contacts.csv"
    if root.exists():
        fresh_start(root)
    say(f"1. making demo recordings in {recordings}")
    make_recordings(recordings)
    make_contacts(contacts)
    for f in sorted(recordings.iterdir()):
        print(f"   {f.name:<22} {f.stat().st_size:>12,} bytes")
    print(f"   contacts: {contacts} ({len(CONTACTS)} contacts and one broken row)")

    exe = [sys.executable, "-m", "audiopipe"]
    port = free_port()
    token = "demo-" + secrets.token_hex(8)
    base = f"http://127.0.0.1:{port}/api/v3"
    env = dict(os.environ, LANCEPILOT_BASE_URL=base, LANCEPILOT_TOKEN=token,
               AUDIOPIPE_STATE=str(root / "state" / "ledger.sqlite3"),
               AUDIOPIPE_CACHE_DIR=str(root / "cache"),
               AUDIOPIPE_SETTLE="0")  # the demo has just written its recordings: no need to wait
    say(f"2. starting the sandbox on {base}")
    sandbox = subprocess.Popen([*exe, "sandbox", "--port", str(port), "--data", str(root / "sandbox"),
                                "--latency", "0.05"],
                               env=dict(env, AUDIOPIPE_SANDBOX_TOKEN=token))
    try:
        wait_ready(f"http://127.0.0.1:{port}/_sandbox/health", sandbox)
        ok = run_demo(exe, root, env)
    finally:
        say("7. stopping the sandbox")
        stop_sandbox(sandbox)
    print("\ndemo " + ("finished: every message sent exactly once" if ok else "found a problem (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
