"""Small helpers the media tests share (not fixtures: plain functions)."""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiopipe.preparation.settings import PrepareSettings

PROJECT = Path(__file__).resolve().parent.parent  # the checkout: README.md, fixtures/, docs/


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden ones (temp ``.part`` files) included, but for the
    sidecars that record what audiopipe wrote (``.STEM.audiopipe.json``, see audiopipe.preparation.outputs)."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not p.name.endswith(".audiopipe.json"))


def settings(tmp_path: Path, **kw) -> PrepareSettings:  # type: ignore[no-untyped-def]
    """Prepare settings whose cache lives in the test's own folder."""
    return PrepareSettings(cache_dir=tmp_path / "cache", **kw)


# The workspace the committed contacts CSVs (fixtures/contacts) name.
FIXTURES_WS = "0b6f2f1e-6a43-4c1b-9d57-3f2a8e9c1d01"

# The API's own words and limits (docs/api.md §1-2), written out here so a change in the sandbox shows.
WS = "0b6f2a52-6a1f-4b52-9a53-2f0f6a0f7c11"
CONTACT = "6d1c9b0e-3c1a-4f7e-8f5e-8d2b7a7c4e21"
MIMES_MSG = "The file field must be a file of type: aac, amr, mp3, m4a, ogg."
SIZE_MSG = "The file field must not be greater than 16384 kilobytes."
MAX_BYTES = 16_777_216


# --- command lines written for people (--help examples, the README), checked against the CLI ------

SHELL_OPERATORS = {"|", "||", "&&", ";", "&"}


def command_lines(text: str) -> list[list[str]]:
    """The shell words of each ``audiopipe ...`` invocation in ``text``: lines ending in ``\\`` are
    joined, ``# comments`` dropped, pipelines cut at their operators, and the optional parts of a
    synopsis (``[--clear]``) taken as written. Words before ``audiopipe`` (``X=1``, a cron schedule,
    a path to the program) are dropped, so each list starts with ``audiopipe``."""
    import shlex

    found = []
    for line in text.replace("\\\n", " ").splitlines():
        if "audiopipe" not in line:
            continue
        words = without_redirections(shlex.split(line.replace("[", " ").replace("]", " "), comments=True))
        segment: list[str] = []
        for word in [*words, ";"]:
            if word not in SHELL_OPERATORS:
                segment.append(word)
                continue
            starts = [i for i, w in enumerate(segment) if w == "audiopipe" or (w.endswith("/audiopipe")
                                                                            and "=" not in w)]
            if starts:
                found.append(["audiopipe", *segment[starts[0] + 1:]])
            segment = []
    return found


def without_redirections(words: list[str]) -> list[str]:
    """``> file``, ``>> log``, ``2>&1`` are the shell's, not the command's."""
    import re

    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif re.fullmatch(r"\d*(>>?|<)", word):
            skip = True  # its target is the next word
        elif not re.match(r"\d*[<>]", word):
            kept.append(word)
    return kept


def takes_a_value(option) -> bool:  # type: ignore[no-untyped-def]
    """Whether a click option reads the next word as its value (not a flag, not a counter)."""
    return option is not None and not option.is_flag and not option.count


def unknown_options(words: list[str], group) -> list[str]:  # type: ignore[no-untyped-def]
    """The options in ``words`` (``audiopipe [GLOBAL] CMD [SUB...] ARGS``) that the command they are
    given to does not have, or a command name that does not exist ("no command NAME")."""
    import click

    command = group
    problems: list[str] = []
    rest = list(words[1:])
    while rest:
        word = rest.pop(0)
        if not word.startswith("-") or word == "-":
            if isinstance(command, click.Group):
                if word not in command.commands:
                    return [*problems, f"no command {word!r}"]
                command = command.commands[word]
            continue  # an argument
        name = word.split("=", 1)[0]
        options = {o: p for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
        options.update(dict.fromkeys(command.get_help_option_names(click.Context(command))))
        if name not in options and not name.startswith("--") and all(f"-{c}" in options for c in name[1:]):
            continue  # short flags bundled: -vv
        if name not in options:
            problems.append(f"{command.name} {name}")
        elif takes_a_value(options[name]) and "=" not in word and rest:
            rest.pop(0)  # its value
    return problems


# --- contacts --------------------------------------------------------------------------------------------

def contacts_for(n: int, seed: int = 7) -> list[str]:
    """``n`` contact ids (version-4 UUIDs), the same ones for the same seed."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    """A CSV as written here: the header line, then one line per row (UTF-8)."""
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def write_contacts(path: Path, contacts: list[str]) -> Path:
    """A contacts CSV of one column, ``contact``."""
    return write_csv(path, "contact", contacts)


# --- running the CLI ---------------------------------------------------------------------------------

# The installed console script: what a user (or cron) starts, for the tests that need a real process.
AUDIOPIPE = str(Path(sys.executable).with_name("audiopipe"))
# Variables that configure audiopipe or the API: a test starts from none of the caller's.
OWN_PREFIXES = ("LANCEPILOT_", "AUDIOPIPE_", "XDG_")


def clean_environ(*, drop: tuple[str, ...] = OWN_PREFIXES, **values: str) -> dict[str, str]:
    """This process's environment less every variable starting with one of ``drop``, plus ``values``:
    what a user's shell with no audiopipe settings would pass on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(values)
    return env


def invoke(args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
           stdin: bytes | str = b"", text: bool = True) -> subprocess.CompletedProcess[Any]:
    """``audiopipe ARGS`` run in this process by click's CliRunner, seen as a subprocess would be: ``env``
    is the whole environment of the call (None: this process's), ``cwd`` its working folder, ``stdin``
    what it reads. Returns a CompletedProcess (``text=False``: bytes), so a test reads either the same.

    Much quicker than a subprocess (no interpreter to start), and counted by coverage. What the CLI sets
    in the process is put back afterwards (:func:`as_a_new_process`). An exception the CLI let through is
    printed as Python would (a traceback on stderr, exit 1). Signals, terminals and crashes need a real
    process: :data:`AUDIOPIPE`."""
    from click.testing import CliRunner

    from audiopipe import runner
    from audiopipe.cli import cli

    with as_a_new_process(env, cwd):
        result = CliRunner().invoke(cli, list(args), input=stdin, prog_name="audiopipe")
    assert not runner.stopping(), "the CLI took a signal's way out: run this test in a real process"
    stdout, stderr = result.stdout_bytes, result.stderr_bytes
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception)).encode()
    if text:  # decoded as subprocess.run(text=True) does: universal newlines
        return subprocess.CompletedProcess([*args], result.exit_code, _text(stdout), _text(stderr))
    return subprocess.CompletedProcess([*args], result.exit_code, stdout, stderr)


@contextlib.contextmanager
def as_a_new_process(env: Mapping[str, str] | None, cwd: Path | None) -> Iterator[None]:
    """Within: ``env`` (when given) is the whole environment, ``cwd`` the working folder, Python's temp
    folder is chosen again (from ``TMPDIR``), and the loggers below "audiopipe" are NOTSET (the CLI's -v
    sets the level on "audiopipe" alone; a test may have set one below). Afterwards all of that is put
    back, with the "audiopipe" logger's handlers and level and the SIGINT/SIGTERM handlers."""
    saved_environ, saved_cwd, saved_tempdir = dict(os.environ), os.getcwd(), tempfile.tempdir
    logger = logging.getLogger("audiopipe")
    saved_logger = (logger.handlers[:], logger.level, logger.propagate)
    below = {name: one.level for name, one in logging.Logger.manager.loggerDict.items()
             if name.startswith("audiopipe.") and isinstance(one, logging.Logger)}
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        for name in below:
            logging.getLogger(name).setLevel(logging.NOTSET)
        tempfile.tempdir = None
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        os.chdir(saved_cwd)
        tempfile.tempdir = saved_tempdir
        logger.handlers[:], logger.level, logger.propagate = saved_logger
        for name, level in below.items():
            logging.getLogger(name).setLevel(level)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


# --- servers and children the tests start ------------------------------------------------------------

Answer = tuple[int, dict[str, str], bytes]  # status, headers, body


class RecordingServer:
    """A tiny HTTP(S) server on 127.0.0.1, in a thread, that counts the connections it accepts and records
    every request (a dict: method, path, headers as a plain dict, body read in full), answering each with
    ``respond(server, request)`` -> (status, headers, body). Not the Lancepilot API: a stand-in for a
    server that is somewhere else, or misbehaves in a way the sandbox does not."""

    def __init__(self, respond: Callable[[RecordingServer, dict[str, Any]], Answer],
                 tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = {"method": "POST", "path": self.path, "headers": dict(self.headers.items()), "body": body}
                outer.requests.append(request)
                status, headers, payload = respond(outer, request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # keep pytest's output clean
                pass

        class Listener(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                outer.connections += 1
                return True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hangs up mid-request is part of some tests

        self.server = Listener(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        scheme = "https" if isinstance(self.server.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def untouched(self) -> bool:
        return self.connections == 0 and self.requests == []

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass
class Reading:
    """A child whose stderr a thread keeps reading line by line (so a chatty one never blocks on a full
    pipe): ``lines`` grows as it writes; ``ready`` says whether a line held the awaited words in time."""

    proc: subprocess.Popen[str]
    lines: list[str]
    ready: bool

    @property
    def text(self) -> str:
        return "".join(self.lines)


def start_reading_stderr(argv: list[str], *, until: str, timeout: float) -> Reading:
    """Start ``argv`` (stdout to /dev/null, stderr read as above) and wait until a line of stderr holds
    ``until``, the child ends, or ``timeout`` seconds pass."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    seen = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if until in line:
                seen.set()
        seen.set()  # ended: nobody waits longer

    threading.Thread(target=pump, daemon=True).start()
    ready = seen.wait(timeout) and any(until in line for line in lines)
    return Reading(proc, lines, ready)


def unmeasured(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) without coverage's subprocess switch: for the load runs (the
    benches' quick modes, the chaos tests' workers), whose thousands of sends coverage would trace line
    by line at several times their cost, and whose code paths the other tests measure anyway."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k != "COVERAGE_PROCESS_CONFIG"}

