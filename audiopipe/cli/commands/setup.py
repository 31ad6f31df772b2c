"""The commands around the work: ``audiopipe doctor`` (is the set-up right?), ``audiopipe cache`` (the
prepared files kept for reuse) and ``audiopipe sandbox`` (a local stand-in for the API)."""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from audiopipe import paths
from audiopipe.cli.console import say
from audiopipe.cli.exits import doctor_exit_code, exit_with
from audiopipe.cli.failures import Command
from audiopipe.cli.ledger import state_file
from audiopipe.cli.options import BASE_URL_HELP, SizeParam, bundle, json_option, state_option
from audiopipe.errors import UsageError
from audiopipe.preparation.formats import FORMAT_NAMES
from audiopipe.text import human_size

if TYPE_CHECKING:
    from audiopipe.sandbox.app import Faults, Sandbox, SandboxConfig


@click.command("cache", cls=Command)
@click.option("--clear", is_flag=True, help="Remove every cached result.")
def cache_cmd(*, clear: bool) -> None:
    """Show (or --clear) the cache of prepared files [env AUDIOPIPE_CACHE_DIR; default ~/.cache/audiopipe].

    \b
    Examples:
      audiopipe cache
      audiopipe cache --clear
      AUDIOPIPE_CACHE_DIR=/var/cache/audiopipe audiopipe cache

    Preparing a file again with the same settings reuses its cached result. The cache only
    grows: clear it now and then (e.g. monthly from cron); nothing is lost but time.
    """
    from audiopipe.preparation.cache import Cache

    cache = Cache()
    if clear:
        say(f"removed {cache.clear()} cached result(s) from {cache.root}")
        return
    entries, size = cache.usage()
    say(f"{cache.root}: {entries} cached result(s), {human_size(size)}")


@click.command("doctor", cls=Command)
@click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES, case_sensitive=False), default="ogg",
              show_default=True, envvar="AUDIOPIPE_FORMAT",
              help="The --format your runs use: its encoder must be there [env AUDIOPIPE_FORMAT].")
@state_option
@click.option("--base-url", envvar="LANCEPILOT_BASE_URL", default=None, help=BASE_URL_HELP)
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="LANCEPILOT_TOKEN_FILE", help="File holding the API token [env LANCEPILOT_TOKEN_FILE].")
@click.option("--workspace", "-w", envvar="LANCEPILOT_WORKSPACE", default=None,
              help="With --contact: check the token against this real workspace [env LANCEPILOT_WORKSPACE].")
@click.option("--contact", "-c", default=None, help="Check the token against this real contact (implies --online).")
@click.option("--online", is_flag=True,
              help="Also check the token with the server: one request that cannot create a message.")
@json_option("The checks as JSON.")
def doctor_cmd(*, fmt: str, state_path: Path | None, base_url: str | None, token_file: Path | None,
               workspace: str | None, contact: str | None, online: bool, as_json: bool) -> None:
    """Check the set-up, one line each: ffmpeg and ffprobe, the encoder of each --format,
    libmagic, the ledger, the cache, the base URL and the token (alias: check).

    \b
    Examples:
      audiopipe doctor
      audiopipe doctor --online                    # the token, asked of the server
      audiopipe doctor -w WORKSPACE_UUID -c CONTACT_UUID --json

    The online check sends one request with no file, which the API must refuse (401 for a
    wrong token, 422 for a good one): it cannot create a message. Without -w and -c it
    names a made-up contact, which cannot receive one either.

    \b
    Exit status: 0 all ok; 1 warnings only (runs work; read them);
    2 something a run needs is missing or wrong.
    """
    from audiopipe.cli.doctor import overall, run_checks
    from audiopipe.send.client import check_uuid

    if contact:
        check_uuid(contact, "contact")
        if not workspace:
            raise UsageError("--contact needs --workspace (or LANCEPILOT_WORKSPACE)")
        check_uuid(workspace, "workspace")
    from_env = click.get_current_context().get_parameter_source("base_url") == ParameterSource.ENVIRONMENT
    checks = run_checks(fmt=fmt.lower(), state_path=state_file(state_path), base_url=base_url,
                        base_url_from="LANCEPILOT_BASE_URL" if from_env else "--base-url",
                        token_file=token_file, online=online, workspace=workspace, contact=contact)
    status = overall(checks)
    if as_json:
        click.echo(json.dumps({"status": status, "checks": [c.to_dict() for c in checks]}))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            say(f"{c.status:<4}  {c.name:<{width}}  {c.detail}")
        counts = Counter(c.status for c in checks)
        say({"ok": "all ok",
             "warn": f"{counts['warn']} warning(s): audiopipe runs; read them",
             "fail": f"{counts['fail']} failure(s): a run would be refused; fix them first"}[status])
    exit_with(doctor_exit_code(status))


# --- the sandbox -----------------------------------------------------------------------------------

SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 - public on purpose: the README and --help show it


@dataclass(frozen=True)
class ServerOptions:
    """Where the sandbox listens, what it stores, and the limits it enforces like the real server's."""

    host: str
    port: int
    token: str
    data_dir: Path | None
    contacts_csv: Path | None
    php_upload_limit: int | None
    proxy_body_limit: int | None
    post_max_size: int | None
    idle_timeout: float
    header_timeout: float
    body_timeout: float
    max_connections: int
    fetch_allow: tuple[str, ...]

    @property
    def data(self) -> Path:
        return self.data_dir or paths.default_sandbox_dir()

    def config(self, faults: Faults) -> SandboxConfig:
        from audiopipe.sandbox.app import LOOPBACK, FetchPolicy, SandboxConfig

        return SandboxConfig(fetch=FetchPolicy(allow=(*LOOPBACK, *self.fetch_allow)),
                             host=self.host, port=self.port, token=self.token, data_dir=self.data,
                             contacts_csv=self.contacts_csv, php_upload_limit=self.php_upload_limit,
                             proxy_body_limit=self.proxy_body_limit, post_max_size=self.post_max_size,
                             idle_timeout=self.idle_timeout, header_timeout=self.header_timeout,
                             body_timeout=self.body_timeout, max_connections=self.max_connections, faults=faults)


def _faults(**values: Any) -> Faults:
    from audiopipe.sandbox.app import Faults

    return Faults(**values)


server_options = bundle(
    "server", ServerOptions,
    click.option("--host", default="127.0.0.1", show_default=True,
                 help="Address to listen on. 0.0.0.0 (or ::) is every address of this machine: the sandbox "
                      "is then reachable from the network, and the URLs that work are shown."),
    click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
                 help="Port (0 picks a free one)."),
    click.option("--token", envvar="AUDIOPIPE_SANDBOX_TOKEN", default=SANDBOX_TOKEN, show_default=True,
                 help="The bearer token clients must send [env AUDIOPIPE_SANDBOX_TOKEN]."),
    click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Where messages and uploaded files are stored [default ~/.local/state/audiopipe/sandbox]."),
    click.option("--contacts", "contacts_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 default=None, help="Strict mode: only the contacts in this CSV exist (others get 404)."),
    click.option("--php-upload-limit", type=SizeParam(), default=None,
                 help="Act like PHP with a smaller upload_max_filesize (e.g. 2MB): bigger files get 422."),
    click.option("--proxy-body-limit", type=SizeParam(), default=None,
                 help="Act like nginx's client_max_body_size: bigger bodies get 413 HTML."),
    click.option("--post-max-size", type=SizeParam(), default=None,
                 help="Act like PHP's post_max_size: bigger uploads get 413 [default: the file limit + 4 MiB]."),
    click.option("--idle-timeout", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True,
                 help="Seconds a connection may stay silent, between requests or within one."),
    click.option("--header-timeout", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
                 help="Seconds the request line and headers may take in all."),
    click.option("--body-timeout", type=click.FloatRange(0, min_open=True), default=120.0, show_default=True,
                 help="Seconds a request body may take in all."),
    click.option("--max-connections", type=click.IntRange(1), default=64, show_default=True,
                 help="Connections served at once; more wait their turn."),
    click.option("--fetch-allow", multiple=True, metavar="NETWORKS",
                 help="Addresses or networks a {\"file\": URL} may be fetched from, besides loopback "
                      "(comma-separated, repeatable; e.g. 10.0.0.0/8,192.0.2.7)."),
)

fault_options = bundle(
    "faults", _faults,
    click.option("--latency", type=click.FloatRange(0), default=0.0, help="Seconds added to every answer."),
    click.option("--rate-429", type=click.FloatRange(0, 1), default=0.0, help="Share of requests answered 429."),
    click.option("--rps-limit", type=click.IntRange(1), default=None,
                 help="Answer 429 above this many requests a second."),
    click.option("--retry-after", type=click.IntRange(0), default=1, show_default=True,
                 help="Retry-After of a 429, seconds."),
    click.option("--rate-500", type=click.FloatRange(0, 1), default=0.0,
                 help="Share answered 500 before anything is stored."),
    click.option("--rate-lost", type=click.FloatRange(0, 1), default=0.0,
                 help="Share of messages stored whose answer is then lost (see --lost-mode)."),
    click.option("--lost-mode", type=click.Choice(["drop", "502", "delay", "mixed"]), default="mixed",
                 show_default=True, help="How an answer is lost: connection dropped, 502, or delayed."),
    click.option("--lost-delay", type=click.FloatRange(0), default=30.0, show_default=True,
                 help="Seconds a 'delay' answer waits (longer than the client's read timeout)."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed for the faults."),
)


@click.command("sandbox", cls=Command)
@server_options
@fault_options
@click.option("--list", "list_only", is_flag=True, help="Print the stored messages as JSON and exit.")
def sandbox_cmd(*, server: ServerOptions, faults: Faults, list_only: bool) -> None:
    """Run a local stand-in for the Lancepilot API, to try everything without an account.

    \b
    It checks what the real server checks (bearer token, UUIDs, field 'file' sniffed
    with libmagic, 16384 KB) and stores every created message in --data; the stored
    messages are at GET /_sandbox/messages, or: audiopipe sandbox --list.

    \b
    Examples:
      audiopipe sandbox --port 8765 --token secret &
      LANCEPILOT_BASE_URL=http://127.0.0.1:8765/api/v3 LANCEPILOT_TOKEN=secret \\
          audiopipe send talk.wav -w WORKSPACE_UUID -c CONTACT_UUID
      audiopipe sandbox --port 0 --rate-lost 0.1 --latency 0.05
      audiopipe sandbox --list

    Stops cleanly on Ctrl-C.
    """
    from audiopipe.sandbox.app import API_PREFIX, serve, stored_messages
    from audiopipe.sandbox.listen import reach, sandbox_banner

    if list_only:
        click.echo(json.dumps(stored_messages(server.data), indent=2))
        return

    config = server.config(faults)
    fetch_from = ", ".join(str(n) for n in config.fetch.networks)

    def ready(sb: Sandbox) -> None:
        host, port, dual_stack = sb.address  # the socket's own address: --port 0 is the real port
        where = reach(host, port, dual_stack, path=API_PREFIX)
        for line in sandbox_banner(where, server.token, SANDBOX_TOKEN, server.data, fetch_from):
            say(line, err=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # stop cleanly under kill / systemd too
    serve(config, stop_event=stop, on_ready=ready)
    say("sandbox stopped", err=True)
