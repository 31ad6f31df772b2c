"""Multipart against URL: bytes on the wire and wall time of one recording sent to many contacts.

    .venv/bin/python bench/bench_url.py              # 1 recording (60 s MP3, about 2.4 MB) x 2,000 contacts
    .venv/bin/python bench/bench_url.py --seconds 125  # about 5 MB, the issue's example (10 GB on the wire)
    .venv/bin/python bench/bench_url.py --quick      # 10 s x 50 contacts, a smoke run (the tests)

Not a test. One run, both ways, the same prepared file (the cache is warmed by a dry run first, so
neither way pays the encode): the embedded batch (``run_batch``, concurrency 8, no rate limit) sends
it to every contact once uploaded (multipart) and once by URL (``--send-by url``: put once into a
folder store served over HTTP on 127.0.0.1 as ``--public-url``), each to an in-process sandbox of
its own. Between the batch and the sandbox sits a TCP relay that counts every byte each way: what
the sender's link carries. By URL the API also fetches the file from the store (counted by the
served folder, when the sandbox fetches URLs); that traffic is the store's, not the sender's.

Correctness, checked (one line on stderr and exit 1 if not): each way the sandbox holds one message
per contact; by URL the store holds the file once. Prints a Markdown table with the ratios, and
writes it to OUT/url.md and every figure to OUT/url.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common import add_dir_options, fail, last_line, run_main, set_dirs

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TOKEN = "bench-url-token"
WS = "0b6f2a52-6a1f-4b52-9a53-2f0f6a0f7c11"
MIB = 1024 * 1024

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from http_folder import serve_folder  # noqa: E402 - the served-folder helper the URL tests use

from audiopipe.campaign.batch import BatchSettings, run_batch  # noqa: E402
from audiopipe.preparation.pipeline import PrepareSettings  # noqa: E402
from audiopipe.sandbox.app import Sandbox, SandboxConfig  # noqa: E402
from audiopipe.send.by_url import SendBy, SendMode  # noqa: E402
from audiopipe.send.client import LancepilotClient  # noqa: E402


class CountingRelay(socketserver.ThreadingTCPServer):
    """A TCP relay on 127.0.0.1 to ``upstream`` that counts the bytes each way: the sender's wire."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _Pipe)
        self.upstream = upstream
        self.sent = 0       # client -> API
        self.received = 0   # API -> client
        self.lock = threading.Lock()

    def count(self, up: bool, n: int) -> None:
        with self.lock:
            if up:
                self.sent += n
            else:
                self.received += n


class _Pipe(socketserver.BaseRequestHandler):
    server: CountingRelay

    def handle(self) -> None:
        upstream = socket.create_connection(self.server.upstream)
        back = threading.Thread(target=self._pump, args=(upstream, self.request, False), daemon=True)
        back.start()
        self._pump(self.request, upstream, True)
        back.join(30)
        upstream.close()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                self.server.count(up, len(data))
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the other side closed: the count so far is what crossed


@contextmanager
def relayed(sb: Sandbox) -> Iterator[CountingRelay]:
    host, port = sb.base_url.split("://", 1)[1].split(":")
    relay = CountingRelay((host, int(port.split("/")[0])))
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.shutdown()
        relay.server_close()


def make_recording(work: Path, seconds: int) -> Path:
    """A real MP3 (stereo pink noise, 320 kbit/s CBR) of ``seconds``, sent as it is (cached)."""
    folder = work / f"rec-{seconds}s"
    path = folder / "message.mp3"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                               f"anoisesrc=color=pink:duration={seconds}:sample_rate=44100", "-ac", "2", "-b:a",
                               "320k", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            fail(f"ffmpeg could not make the input: {last_line(done.stderr)}")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    return folder


def one_way(name: str, settings: BatchSettings, work: Path, contacts: int) -> dict[str, Any]:
    """One batch to every contact through a counting relay, against a sandbox of its own."""
    with Sandbox(SandboxConfig(token=TOKEN, data_dir=work / f"sandbox-{name}")) as sb, relayed(sb) as relay:
        base = sb.url.replace(sb.base_url, f"http://127.0.0.1:{relay.server_address[1]}")
        with LancepilotClient(token=TOKEN, base_url=base) as api:
            started = time.perf_counter()
            result = run_batch(settings, sender=api, state_path=work / f"ledger-{name}.sqlite3")
            took = time.perf_counter() - started
        stored = len(sb.messages())
    if stored != contacts or any(r.status != "sent" for r in result.rows):
        fail(f"{name}: the sandbox holds {stored} messages for {contacts} contacts "
             f"({sum(r.status == 'sent' for r in result.rows)} rows sent)")
    return {"way": name, "seconds": took, "sent_bytes": relay.sent, "received_bytes": relay.received,
            "per_message_bytes": relay.sent / contacts, "messages_per_second": contacts / took}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a 10 s recording to 50 contacts (a smoke run)")
    ap.add_argument("--contacts", type=int, default=None, help="contacts (default 2,000; 50 with --quick)")
    ap.add_argument("--seconds", type=int, default=None, help="length of the MP3 (default 60 s; 10 with --quick)")
    add_dir_options(ap)
    args = ap.parse_args()
    set_dirs(args.work, args.out)
    work = (args.work.resolve() if args.work else BENCH / ".work") / "url"
    contacts, seconds = args.contacts or (50 if args.quick else 2000), args.seconds or (10 if args.quick else 60)
    for stale in ("sandbox-upload", "sandbox-url", "store", "cache"):
        shutil.rmtree(work / stale, ignore_errors=True)
    for ledger in work.glob("ledger-*"):
        ledger.unlink()
    folder = make_recording(work, seconds)
    (folder / ".audiopipe-ledger").unlink(missing_ok=True)
    csv_path = work / f"contacts-{contacts}.csv"
    csv_path.write_text("contact\n" + "".join(f"00000000-0000-4000-8000-{i:012d}\n" for i in range(contacts)))
    base = {"folder": folder, "contacts": csv_path, "workspace": WS, "rate": 0, "concurrency": 8, "settle": 0,
            "prepare": PrepareSettings(cache_dir=work / "cache"), "new_ledger": True}
    dry = run_batch(BatchSettings(**base, dry_run=True), sender=None, state_path=work / "ledger-dry.sqlite3")
    prepared = dry.rows[0].size or 0  # the dry run prepared it (cached): neither way below pays the encode
    upload = one_way("upload", BatchSettings(**base, campaign="upload"), work, contacts)
    with serve_folder(work / "store") as served:
        mode = SendMode(SendBy.URL, public_url=served.url)
        url = one_way("url", BatchSettings(**base, campaign="url", send=mode, store=str(work / "store")),
                      work, contacts)
        fetched = sum(served.gets.values())
    in_store = [p for p in (work / "store").rglob("*")  # the prepared files (not the cache tier's manifests)
                if p.is_file() and p.parent.name != "manifests" and p.suffix != ".json"]
    if len(in_store) != 1:
        fail(f"by URL the store holds {len(in_store)} files, expected the prepared file once")
    url.update(store_put_bytes=in_store[0].stat().st_size, store_fetches=fetched,
               store_fetched_bytes=fetched * in_store[0].stat().st_size)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    cmd = " ".join([".venv/bin/python bench/bench_url.py", *sys.argv[1:]])
    text = "\n".join(table(cmd, commit, contacts, seconds, prepared, upload, url))
    print(text)
    out = args.out.resolve() if args.out else BENCH / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "url.md").write_text(text + "\n")
    (out / "url.json").write_text(json.dumps({"command": cmd, "commit": commit, "contacts": contacts,
                                              "recording_seconds": seconds, "prepared_bytes": prepared,
                                              "python": platform.python_version(), "ways": [upload, url]}, indent=2))
    return 0


def size_of(n: float) -> str:
    for unit, scale in (("GiB", MIB * 1024), ("MiB", MIB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def table(cmd: str, commit: str, contacts: int, seconds: int, prepared: int, upload: dict[str, Any],
          url: dict[str, Any]) -> list[str]:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:,.0f}x" if b else "-"

    fetched = (f"{url['store_fetches']} fetches, {size_of(url['store_fetched_bytes'])}" if url["store_fetches"]
               else "none (this sandbox stores URLs unfetched)")
    return [
        f"`{cmd}` ({datetime.now(timezone.utc):%Y-%m-%d}, commit {commit}, {os.cpu_count()} vCPUs, load average "
        f"{os.getloadavg()[0]:.2f}): 1 recording ({seconds} s MP3, {prepared / MIB:.2f} MiB prepared) x "
        f"{contacts} contacts, concurrency 8, no rate limit, sandbox on 127.0.0.1",
        "",
        "| way | sender -> API | per message | API -> sender | wall time | messages/s |",
        "|---|---|---|---|---|---|",
        *(f"| {w['way']} | {size_of(w['sent_bytes'])} | {w['per_message_bytes']:,.0f} B | "
          f"{size_of(w['received_bytes'])} | {w['seconds']:.1f} s | {w['messages_per_second']:,.0f} |"
          for w in (upload, url)),
        f"| ratio upload / url | {ratio(upload['sent_bytes'], url['sent_bytes'])} | | | "
        f"{upload['seconds'] / url['seconds']:.1f}x | |",
        "",
        f"By URL the file went into the store once ({size_of(url['store_put_bytes'])}); the API's fetches "
        f"from the store: {fetched}.",
    ]


if __name__ == "__main__":
    run_main("bench_url", main)
