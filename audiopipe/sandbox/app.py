"""A local sandbox of the Lancepilot audio-message API, for tests and dry runs: :class:`Sandbox`, its
life cycle, and :func:`serve` for the CLI.

It answers ``POST /api/v3/workspaces/<workspace>/contacts/<contact>/messages/audio`` the way the real
Laravel server does (docs/api.md §1-2), can misbehave on purpose, is bounded against broken or
hostile clients, and stores every created message durably. Each of those is a module of its own:

* :mod:`~audiopipe.sandbox.config`: the settings (:class:`SandboxConfig`, :class:`Faults`);
* :mod:`~audiopipe.sandbox.wsgi`: the routes, and the boundary that answers everything in the API's shape;
* :mod:`~audiopipe.sandbox.checks`: the server's real checks of an upload (token, UUIDs, libmagic
  type, size), with Laravel's messages; :mod:`~audiopipe.sandbox.strict`: strict mode's contacts;
* :mod:`~audiopipe.sandbox.fetch`: fetching a ``{"file": URL}``, only from allowed addresses, capped;
* :mod:`~audiopipe.sandbox.faults`: latency, 500s, 429s and lost answers;
* :mod:`~audiopipe.sandbox.store`: what it received (SQLite in WAL mode, and the files);
* :mod:`~audiopipe.sandbox.server` and :mod:`~audiopipe.sandbox.bodies`: serving, with keep-alive,
  timeouts, connection and body caps.

Use it in-process::

    with Sandbox(SandboxConfig(token="t", data_dir=tmp_path)) as sb:
        requests.post(f"{sb.url}/workspaces/{ws}/contacts/{c}/messages/audio", ...)
        assert len(sb.messages()) == 1

or from the CLI through :func:`serve` / :func:`run_forever`. The names the CLI and tests use are all
importable from here. Nothing in the sandbox prints; it logs under ``audiopipe.sandbox``, and never
logs the token.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from audiopipe.errors import UsageError
from audiopipe.sandbox.config import API_PREFIX, LOOPBACK, LOST_MODES, Faults, FetchPolicy, LostMode, SandboxConfig
from audiopipe.sandbox.server import Server, bind_server
from audiopipe.sandbox.store import MessageStore, stored_messages
from audiopipe.sandbox.strict import Contacts, load_contacts
from audiopipe.sandbox.wsgi import SandboxApp

__all__ = [
    "API_PREFIX",
    "LOOPBACK",
    "LOST_MODES",
    "Contacts",
    "Faults",
    "FetchPolicy",
    "LostMode",
    "Sandbox",
    "SandboxConfig",
    "load_contacts",
    "run_forever",
    "serve",
    "stored_messages",
]

log = logging.getLogger(__name__)

_STOP_GRACE_S = 5.0  # how long stop() waits for requests still being handled
_POLL_S = 0.05       # how often the serving thread looks whether it should stop
# A wildcard address is where a server listens, not one a client can connect to: use the loopback one.
_CONNECTABLE = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - a lookup table, binds nothing


class Sandbox:
    """The Lancepilot API sandbox. ``start()`` serves it from a background thread; ``stop()`` ends it.

    ``url`` is the API base (``http://127.0.0.1:PORT/api/v3``), ``messages()`` what was created,
    ``request_count`` how many POSTs arrived (whatever their fate).
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._stopping = threading.Event()
        self._app = SandboxApp(config, self._stopping)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle

    def start(self) -> Sandbox:
        """Bind the port and serve from a daemon thread; returns as soon as it accepts connections.

        Raises :class:`UsageError` if the address cannot be bound (port in use, bad host).
        """
        if self._server is not None:
            raise UsageError("this sandbox is already running")
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        store = self._app.store = MessageStore(self.config.data_dir)
        self._stopping.clear()
        try:
            self._server = bind_server(self.config, self._app, self._stopping)
        except BaseException:
            store.close()
            self._app.store = None
            raise
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": _POLL_S},
                                        name=f"sandbox:{self.port}", daemon=True)
        self._thread.start()
        log.info("Lancepilot sandbox listening on %s (data in %s)", self.url, self.config.data_dir)
        return self

    def stop(self) -> None:
        """Stop serving, wake requests sleeping in a fault, and close the store. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()  # serve_forever() returns and closes the listening socket
        if thread is not None:
            thread.join()
        self._app.wait_idle(_STOP_GRACE_S)
        server.close_connections()  # idle keep-alive ones would otherwise wait for their timeout
        if self._app.store is not None:
            self._app.store.close()
        self._app.store = None
        self._server = self._thread = None
        log.info("Lancepilot sandbox stopped")

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what tests look at

    @property
    def port(self) -> int:
        return int(self._running().port)

    @property
    def address(self) -> tuple[str, int, bool]:
        """What the listening socket is really bound to: its address (a wildcard such as ``0.0.0.0``
        stays one), its port (the real one when ``port`` was 0), and whether an IPv6 socket takes
        IPv4 connections too (dual stack)."""
        sock = self._running().socket
        host, port = sock.getsockname()[:2]
        dual = sock.family == socket.AF_INET6 and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        return str(host), int(port), dual

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, with a wildcard host replaced by the loopback address."""
        host = _CONNECTABLE.get(self.config.host, self.config.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base to give a client, e.g. ``http://127.0.0.1:PORT/api/v3``."""
        return self.base_url + API_PREFIX

    @property
    def request_count(self) -> int:
        """POST requests received since ``__init__``, answered or not."""
        return self._app.request_count

    def messages(self) -> list[dict[str, Any]]:
        """Every stored message, oldest first: the API's ``data`` plus ``file_path`` (None for a URL)."""
        store = self._app.store
        return store.messages() if store is not None else stored_messages(self.config.data_dir)

    def _running(self) -> Server:
        if self._server is None:
            raise UsageError("the sandbox is not running: call start() first")
        return self._server


def serve(config: SandboxConfig, *, stop_event: threading.Event | None = None,
          on_ready: Callable[[Sandbox], None] | None = None) -> None:
    """Run a sandbox until ``stop_event`` is set or Ctrl-C; then stop it cleanly and return.

    ``on_ready(sandbox)`` is called once it accepts connections (to show ``sandbox.url``, which
    is only known then when ``port`` is 0). Raises :class:`UsageError` if it cannot listen.
    """
    event = stop_event if stop_event is not None else threading.Event()
    sandbox = Sandbox(config)
    try:
        sandbox.start()
        if on_ready is not None:
            on_ready(sandbox)
        while not event.wait(0.2):  # a timed wait keeps Ctrl-C deliverable in the main thread
            pass
    except KeyboardInterrupt:
        log.info("sandbox: interrupted")
    finally:
        sandbox.stop()


def run_forever(config: SandboxConfig) -> None:
    """:func:`serve` until Ctrl-C."""
    serve(config)
