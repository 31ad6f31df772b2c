"""What is checked before the expensive work, and ``audiopipe doctor``'s report of the set-up.

Two uses of the same checks: :func:`require_tools` refuses a run at once (ffmpeg, ffprobe, the
encoder its ``--format`` needs, libmagic) instead of after a folder was half prepared; and
:func:`run_checks` looks at everything a run needs and says, one line each, ``ok``, ``warn`` (it
runs, but look) or ``fail`` (a run would be refused). The library never prints: the CLI does.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from audiopipe.cli.flags import told
from audiopipe.errors import AudiopipeError, ToolMissingError, UsageError
from audiopipe.preparation.encoders import require_encoder
from audiopipe.preparation.formats import FORMATS, get_format

OK, WARN, FAIL = "ok", "warn", "fail"
EXIT_CODES = {OK: 0, WARN: 1, FAIL: 2}

# The start of an Ogg/Opus stream: libmagic must call it audio/ogg, as the server's does.
_OPUS_HEAD = b"OggS\x00\x02" + b"\x00" * 22 + b"OpusHead\x01\x01" + b"\x00" * 20


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def overall(checks: list[Check]) -> str:
    """The worst status among the checks."""
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


# --- refusing a run early ------------------------------------------------------------------------

def require_tools(fmt: str) -> None:
    """ffmpeg, ffprobe, the encoder ``fmt`` needs and libmagic, or a :class:`ToolMissingError` now.

    The encoder is required even when every file might go as it is: finding out after a folder was
    prepared that the rest cannot be is what this check is for."""
    from audiopipe.preparation.sniff import sniff_mime_buffer
    from audiopipe.runner import find_tool

    find_tool("ffmpeg")
    find_tool("ffprobe")
    require_encoder(get_format(fmt))
    sniff_mime_buffer(_OPUS_HEAD)


# --- the doctor's checks ---------------------------------------------------------------------------

def _first_line_version(text: str) -> str:
    words = text.split()
    return words[2] if len(words) > 2 and words[1] == "version" else text.strip()[:60]


def check_tool(name: str) -> Check:
    from audiopipe.runner import find_tool, run

    try:
        path = find_tool(name)
        out = run([path, "-version"], timeout=30, what=f"{name} -version", limited=False)
    except AudiopipeError as exc:
        return Check(name, FAIL, str(exc))
    first = out.stdout.decode("utf-8", "replace").splitlines()
    version = _first_line_version(first[0]) if first else "unknown version"
    return Check(name, OK, f"{path} (version {version})")


def check_encoders(chosen: str) -> list[Check]:
    """The chosen format's encoder (fail when missing), and one line on what the others can use."""
    from audiopipe.runner import audio_encoders

    try:
        have = audio_encoders()
    except AudiopipeError as exc:
        return [Check("encoders", FAIL, f"cannot ask ffmpeg for its encoders: {exc}")]
    fmt = FORMATS[chosen]
    if fmt.encoder in have:
        mine = Check(f"format {chosen}", OK, f"encoder {fmt.encoder}")
    else:
        mine = Check(f"format {chosen}", FAIL, f"this ffmpeg has no {fmt.encoder} encoder: choose another "
                                               f"--format or install an ffmpeg built with {fmt.encoder}")
    others = [(name, f.encoder) for name, f in FORMATS.items() if name != chosen]
    usable = ", ".join(f"{name} ({enc})" for name, enc in others if enc in have)
    missing = ", ".join(f"{name} (no {enc})" for name, enc in others if enc not in have)
    # what the other formats could use is information, not a fault of this set-up
    return [mine, Check("other formats", OK, f"{usable or 'none'} usable" + (f"; not {missing}" if missing else ""))]


def check_libmagic() -> Check:
    from audiopipe.preparation.sniff import sniff_mime_buffer

    try:
        mime = sniff_mime_buffer(_OPUS_HEAD)
    except ToolMissingError as exc:
        return Check("libmagic", FAIL, str(exc))
    except Exception as exc:  # a libmagic without its database raises its own errors
        return Check("libmagic", FAIL, f"libmagic could not sniff a file ({exc}); reinstall it")
    try:
        import magic

        version = f"version {magic.version()}"  # type: ignore[no-untyped-call]  # python-magic has no annotations
    except (AttributeError, ImportError, OSError):
        version = "version unknown"
    if mime != "audio/ogg":
        return Check("libmagic", WARN, f"{version}: it calls Ogg/Opus {mime!r}, the server's says 'audio/ogg': "
                                       "files may be judged differently than by the server")
    return Check("libmagic", OK, f"{version}; sniffs Ogg/Opus as audio/ogg, as the server does")


def _writable_folder(folder: Path) -> tuple[bool, str]:
    """Whether a file can be made in ``folder`` (or, when it does not exist yet, in the nearest
    folder above it that does), without leaving anything behind."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return False, f"{probe} is not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".audiopipe-doctor-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        from audiopipe.errors import os_reason

        return False, f"{probe}: {os_reason(exc)}"
    return True, ""


def _no_ledger_yet(path: Path) -> Check:
    ok, why = _writable_folder(path.parent)
    if not ok:
        return Check("ledger", FAIL, f"{path} does not exist and cannot be made: {why}")
    return Check("ledger", OK, f"{path} (not made yet; the first batch makes it)")


def check_ledger(path: Path) -> Check:
    from audiopipe.campaign.ledger import open_existing

    if not path.exists():
        return _no_ledger_yet(path)
    if not os.access(path, os.R_OK) or not os.access(path, os.W_OK):
        return Check("ledger", FAIL, f"{path}: cannot {'read' if not os.access(path, os.R_OK) else 'write'} it: "
                                     "check its permissions")
    try:
        found = open_existing(path)
        if found is None:  # gone since the check above
            return _no_ledger_yet(path)
        with found as ledger:
            counts = ledger.counts()
            running = ledger.running()
    except AudiopipeError as exc:
        return Check("ledger", FAIL, str(exc))
    recorded = sum(counts.values())
    if running:
        return Check("ledger", WARN, f"{path}: locked by a run now ({running}): a batch started now exits 6 "
                                     f"at once; {recorded} send(s) recorded")
    return Check("ledger", OK, f"{path}: readable, writable, not locked; {recorded} send(s) recorded")


def check_cache() -> Check:
    from audiopipe.preparation.cache import Cache

    cache = Cache()
    ok, why = _writable_folder(cache.root)
    if not ok:
        return Check("cache", WARN, f"{cache.root} cannot be written ({why}): runs go on without a cache, "
                                    "preparing every file again; set AUDIOPIPE_CACHE_DIR")
    if not cache.root.exists():
        return Check("cache", OK, f"{cache.root} (empty; made when first used)")
    from audiopipe.text import human_size

    entries, size = cache.usage()
    return Check("cache", OK, f"{cache.root}: writable, {entries} result(s), {human_size(size)} "
                              "('audiopipe cache --clear' empties it)")


def check_base_url(base_url: str | None, where: str) -> Check:
    """``base_url`` as a run reads it; ``where`` it came from (--base-url, LANCEPILOT_BASE_URL)."""
    from audiopipe.send.client import DEFAULT_BASE_URL, configured_base_url, parse_base_url

    try:
        base_url = base_url or configured_base_url()
        if not base_url:
            where = "the default"
        checked = parse_base_url(base_url or DEFAULT_BASE_URL)
    except UsageError as exc:
        return Check("base URL", FAIL, str(exc))
    if checked.origin.scheme == "http" and not checked.origin.is_loopback:
        return Check("base URL", FAIL, f"{checked} ({where}) is plain http to another machine: the token would "
                                       "travel in clear, and audiopipe refuses it; use https")
    return Check("base URL", OK, f"{checked} ({where})")


def check_token_setting(token_file: Path | None) -> Check:
    from audiopipe.send.client import load_token, token_setting

    try:
        raw, _ = token_setting(None, token_file)
        token, source = load_token(None, token_file)
    except UsageError as exc:
        return Check("token", FAIL, told(exc))
    shape = f"{len(token)} characters, printable ASCII"
    if raw != token:
        return Check("token", WARN, f"from {source} ({shape}); it begins with 'Bearer ', which audiopipe "
                                    "removes: better keep only the token there")
    return Check("token", OK, f"from {source} ({shape}; never shown)")


def check_online(base_url: str | None, token_file: Path | None, workspace: str | None,
                 contact: str | None) -> Check:
    """The token check against the server: with a real workspace and contact when given, otherwise
    on a made-up contact, which cannot receive a message at all."""
    from audiopipe.send.client import LancepilotClient

    made_up = not (workspace and contact)
    ws, ct = (workspace, contact) if workspace and contact else (str(uuid.uuid4()), str(uuid.uuid4()))
    try:
        with LancepilotClient(base_url=base_url, token_file=token_file, connect_timeout=5.0,
                              read_timeout=15.0) as client:
            result = client.check_token(ws, ct)
    except AudiopipeError as exc:
        return Check("token check", FAIL, told(exc))
    took = f"{result.seconds * 1000:.0f} ms"
    if result.accepted is True:
        return Check("token check", OK, f"{result.detail}; one request, {took}")
    if result.accepted is False:
        return Check("token check", FAIL, f"{result.detail} ({took})")
    if result.status == 404:
        detail = ("the server answered 404 for a made-up contact; a wrong token gets 401 first, so it was "
                  "not refused, unless the base URL is wrong (no such route): give -w and -c for a sure answer"
                  if made_up else "the workspace or contact was not found (404), or the base URL is wrong")
        return Check("token check", WARN, f"{detail} ({took})")
    return Check("token check", WARN if result.status is not None else FAIL, f"{result.detail} ({took})")


def run_checks(*, fmt: str, state_path: Path, base_url: str | None, base_url_from: str,
               token_file: Path | None, online: bool, workspace: str | None,
               contact: str | None) -> list[Check]:
    checks = [check_tool("ffmpeg"), check_tool("ffprobe")]
    if checks[0].status == OK:
        checks += check_encoders(fmt)
    checks += [check_libmagic(), check_ledger(state_path), check_cache(), check_base_url(base_url, base_url_from),
               check_token_setting(token_file)]
    if (online or contact) and all(c.status != FAIL for c in checks[-2:]):
        checks.append(check_online(base_url, token_file, workspace, contact))
    return checks
