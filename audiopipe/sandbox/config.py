"""What a sandbox is told: where it listens, what it accepts, how it is bounded against hostile
clients, and how it misbehaves on purpose. Every setting is checked when it is made: a bad one is a
:class:`UsageError` that names it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from audiopipe.errors import UsageError

API_PREFIX = "/api/v3"
KiB, MiB = 1 << 10, 1 << 20


class LostMode(str, Enum):
    """How the answer to a stored message is lost (equal to its plain name: ``LostMode.DROP == "drop"``)."""

    DROP = "drop"       # the connection is dropped without an answer
    PROXY_502 = "502"   # the proxy answers 502 Bad Gateway
    DELAY = "delay"     # the answer comes after ``lost_delay`` seconds, past the client's read timeout
    MIXED = "mixed"     # one of the three above, drawn for each message

    def __str__(self) -> str:
        return self.value


LOST_MODES = frozenset(mode.value for mode in LostMode)
CONCRETE_LOST_MODES = (LostMode.DROP, LostMode.PROXY_502, LostMode.DELAY)  # what "mixed" draws from, in this order


@dataclass(kw_only=True)
class Faults:
    """Misbehaviour on purpose. All draws come from one ``random.Random(seed)``, so a run is
    reproducible as long as the requests arrive in the same order.

    Applied, in this order, to POSTs on the audio route: ``latency``; ``rate_500`` (nothing stored);
    ``rps_limit`` then ``rate_429`` (429 with ``Retry-After: retry_after``); then, after a message
    was validated and stored, ``rate_lost``: the answer is lost in the way ``lost_mode`` says
    (``"drop"`` the connection, a ``"502"`` from the proxy, or a ``"delay"`` of ``lost_delay``
    seconds so the client's read timeout fires; ``"mixed"`` picks one of the three at random).
    """

    seed: int = 0
    latency: float = 0.0
    rate_429: float = 0.0
    rps_limit: int | None = None
    retry_after: int = 1
    rate_500: float = 0.0
    rate_lost: float = 0.0
    lost_mode: LostMode | str = LostMode.MIXED  # a plain name is taken too, and made a LostMode
    lost_delay: float = 30.0

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_500", "rate_lost"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"faults.{name} must be a probability between 0 and 1, not {value!r}")
        if self.latency < 0 or self.lost_delay < 0:
            raise UsageError("faults.latency and faults.lost_delay must not be negative")
        if self.rps_limit is not None and self.rps_limit < 1:
            raise UsageError(f"faults.rps_limit must be at least 1 (or None for no limit), not {self.rps_limit!r}")
        if self.retry_after < 0:
            raise UsageError(f"faults.retry_after must not be negative, not {self.retry_after!r}")
        try:
            self.lost_mode = LostMode(self.lost_mode)
        except ValueError:
            raise UsageError(f"faults.lost_mode must be one of {sorted(LOST_MODES)}, not {self.lost_mode!r}") from None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


def parse_networks(values: Iterable[str | Network]) -> tuple[Network, ...]:
    """Networks from addresses or CIDR blocks (``10.0.0.0/8``, ``127.0.0.1/8``, ``::1``), comma-separated
    or not. Host names are refused: what a name resolves to is decided at each fetch, never trusted ahead."""
    networks: list[Network] = []
    for value in values:
        for part in ([value] if not isinstance(value, str) else [p.strip() for p in value.split(",") if p.strip()]):
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise UsageError(f"fetch allow-list: {part!r} is not an IP address or network "
                                 "(write it as 10.0.0.0/8 or 192.0.2.7; host names are not taken)") from None
    return tuple(networks)


@dataclass(kw_only=True)
class FetchPolicy:
    """How the sandbox fetches the URL of a ``{"file": URL}`` message, as the real server must: only
    http(s), only to addresses in ``allow`` (loopback by default: a sandbox is no open proxy into the
    network it runs in), at most ``max_redirects`` hops each checked the same way, ``connect_timeout``
    and ``read_timeout`` (seconds, per connection and per read) within a ``deadline`` for the whole
    fetch. The size cap is the file limit (:attr:`SandboxConfig.max_bytes`)."""

    allow: tuple[str | Network, ...] = LOOPBACK
    max_redirects: int = 3
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 60.0

    def __post_init__(self) -> None:
        self.allow = parse_networks(self.allow)
        if not 0 <= self.max_redirects <= 10:
            raise UsageError(f"fetch.max_redirects must be between 0 and 10, not {self.max_redirects!r}")
        for name in ("connect_timeout", "read_timeout", "deadline"):
            value = getattr(self, name)
            if not value > 0:
                raise UsageError(f"fetch.{name} must be a positive number of seconds, not {value!r}")

    @property
    def networks(self) -> tuple[Network, ...]:
        return tuple(n for n in self.allow if not isinstance(n, str))  # all parsed by __post_init__

    def allows(self, address: str) -> bool:
        """Whether ``address`` (an IP address) is in the allow-list; an IPv4-mapped IPv6 address
        counts as its IPv4 one, so ``::ffff:10.0.0.1`` is not a way around ``10.0.0.0/8``."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)


@dataclass(kw_only=True)
class SandboxConfig:
    """How the sandbox listens, what it accepts, and how it misbehaves.

    ``port=0`` picks a free port (read it back from :attr:`Sandbox.url`). ``max_kb`` is Laravel's
    ``max:`` in KiB: ``max_kb * 1024`` bytes is accepted, one byte more is not. ``php_upload_limit``
    (bytes) mimics a smaller PHP ``upload_max_filesize``: a larger file is refused with 422
    "The file failed to upload.". ``proxy_body_limit`` (bytes) mimics nginx's
    ``client_max_body_size``: a larger ``Content-Length`` gets a 413 HTML page before the body is
    parsed (chunked bodies are counted as they stream). ``contacts_csv`` turns on strict mode: only
    the contacts it lists exist. ``fetch`` says where and how a ``{"file": URL}`` is fetched.

    What a hostile or broken client can cost is bounded. ``post_max_size`` (bytes) is PHP's: a
    multipart body over it gets Laravel's 413 (default: the file limit plus 4 MiB, so a file just
    over ``max_kb`` still gets the 422 that names the limit). ``max_json_body`` caps every other body
    (JSON, form-urlencoded): a URL message is tiny. ``idle_timeout`` is how long a connection may
    stay silent (between keep-alive requests, or within one); ``header_timeout`` is how long the
    request line and headers may take in all, ``body_timeout`` the body; ``max_connections``
    connections are served at once, the others wait in the listen queue.
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str
    data_dir: Path
    max_kb: int = 16384
    php_upload_limit: int | None = None
    proxy_body_limit: int | None = None
    post_max_size: int | None = None
    max_json_body: int = 64 * KiB
    idle_timeout: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 120.0
    max_connections: int = 64
    contacts_csv: Path | None = None
    faults: Faults = field(default_factory=Faults)
    fetch: FetchPolicy = field(default_factory=FetchPolicy)

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token.strip():
            raise UsageError("the sandbox needs a non-empty token (clients must send 'Authorization: Bearer <token>')")
        self.data_dir = Path(self.data_dir).expanduser()
        if self.contacts_csv is not None:
            self.contacts_csv = Path(self.contacts_csv).expanduser()
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port must be between 0 and 65535, not {self.port!r}")
        if self.max_kb < 1:
            raise UsageError(f"max_kb must be at least 1, not {self.max_kb!r}")
        self._check_limits()

    def _check_limits(self) -> None:
        for name in ("php_upload_limit", "proxy_body_limit", "post_max_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive number of bytes (or None), not {value!r}")
        if self.max_json_body < 1:
            raise UsageError(f"max_json_body must be a positive number of bytes, not {self.max_json_body!r}")
        for name in ("idle_timeout", "header_timeout", "body_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise UsageError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.max_connections < 1:
            raise UsageError(f"max_connections must be at least 1, not {self.max_connections!r}")

    @property
    def max_bytes(self) -> int:
        """The largest accepted file, in bytes (Laravel's kilobytes are 1024 bytes)."""
        return self.max_kb * 1024

    @property
    def post_limit(self) -> int:
        """The largest multipart body the app reads (``post_max_size`` or its default)."""
        return self.post_max_size if self.post_max_size is not None else self.max_bytes + 4 * MiB

    def __repr__(self) -> str:  # never show the token, even in a traceback or a log line
        return (f"SandboxConfig(host={self.host!r}, port={self.port!r}, token='***', data_dir={self.data_dir!r}, "
                f"max_kb={self.max_kb!r}, php_upload_limit={self.php_upload_limit!r}, "
                f"proxy_body_limit={self.proxy_body_limit!r}, post_max_size={self.post_max_size!r}, "
                f"max_json_body={self.max_json_body!r}, idle_timeout={self.idle_timeout!r}, "
                f"header_timeout={self.header_timeout!r}, body_timeout={self.body_timeout!r}, "
                f"max_connections={self.max_connections!r}, contacts_csv={self.contacts_csv!r}, "
                f"faults={self.faults!r}, fetch={self.fetch!r})")
