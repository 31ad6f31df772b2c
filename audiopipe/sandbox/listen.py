"""Where a listening server can be reached from: the URLs to show for the address it is bound to.

A wildcard address (``0.0.0.0``, ``::``) is where a server listens, not an address a client can
connect to: it stands for every address of the machine. The URLs given for it are the loopback one
(from this machine) and the machine's own address on its network (from other machines), and the
server is then reachable from the network. Nothing here prints.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

# Where a UDP socket is "connected" to find the address this machine uses on its network. A UDP
# connect only picks a route: no packet is sent. Documentation addresses (RFC 5737, RFC 3849) are
# never in use, so the answer is the address of the default route.
_ROUTE_PROBES = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}
_LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


@dataclass(frozen=True)
class Reach:
    """What a server bound to ``address`` offers: where it listens, and who can use which URL."""

    listening: str                     # "0.0.0.0:8765", "[::]:8765", "127.0.0.1:8765"
    urls: tuple[tuple[str, str], ...]  # (URL, who can use it), the local one first
    scope: str                         # what the address stands for, e.g. "every IPv4 address of this machine"
    wildcard: bool                     # bound to every address of the machine, not to one
    from_network: bool                 # other machines can connect (not loopback only)
    local_url: str | None              # a loopback URL, if the server takes loopback connections

    @property
    def url(self) -> str:
        """The URL to use from this machine."""
        return self.local_url or self.urls[0][0]


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def network_address(family: socket.AddressFamily) -> str | None:
    """This machine's address on its network for ``family`` (the default route's), or None."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((_ROUTE_PROBES[family], 9))
            found = ipaddress.ip_address(probe.getsockname()[0].split("%")[0])
    except (OSError, ValueError):  # no route of that family: no network, or IPv4 only
        return None
    if found.is_loopback or found.is_link_local or found.is_unspecified:
        return None
    return str(found)


def reach(host: str, port: int, dual_stack: bool = False, path: str = "") -> Reach:
    """The URLs (``http://ADDRESS:PORT`` + ``path``) a client can use for a server bound to ``host``."""
    address = ipaddress.ip_address(host.split("%")[0])
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    listening = host_port(host, port)

    def url(ip: str) -> str:
        return f"http://{host_port(ip, port)}{path}"

    if not address.is_unspecified:
        scope = "this machine only" if address.is_loopback else "this one address"
        return Reach(listening, ((url(host), scope),), scope, False, from_network=not address.is_loopback,
                     local_url=url(host) if address.is_loopback else None)
    # a dual-stack socket takes IPv4 too; 127.0.0.1 comes first, as the address everyone knows
    families = [socket.AF_INET, socket.AF_INET6] if family == socket.AF_INET6 and dual_stack else [family]
    local = tuple((url(_LOOPBACK[f]), "from this machine") for f in families)
    remote = tuple((url(ip), "from other machines")
                   for ip in (network_address(f) for f in families) if ip is not None)
    versions = " and ".join("IPv6" if f == socket.AF_INET6 else "IPv4" for f in families)
    return Reach(listening, local + remote, f"every {versions} address of this machine", True, from_network=True,
                 local_url=local[0][0])


def sandbox_banner(where: Reach, token: str, public_token: str, data: object, fetch_from: str = "") -> list[str]:
    """The lines the sandbox shows once it listens: where, with what token, where it fetches a
    ``{"file": URL}`` from (``fetch_from``: the allowed networks), and how to try it."""
    if where.wildcard:  # no address a client can use: say what it stands for, and the URLs that work
        lines = [f"sandbox listening on {where.listening} ({where.scope})"]
        lines += [f"  url:   {url}   ({who})" for url, who in where.urls]
    else:
        lines = [f"sandbox listening on {where.url}"]
    if where.from_network:
        lines.append("audiopipe: warning: the sandbox is reachable from the network: anyone who can reach "
                     "this machine and knows its token can post to it"
                     + (f" (the token is the default {token!r}: set --token)" if token == public_token else "")
                     + "; --host 127.0.0.1 keeps it to this machine")
    lines += [f"  token: {token}   (the sandbox's own; not a Lancepilot token)", f"  data:  {data}"]
    if fetch_from:
        lines.append(f"  fetch: URL messages only from {fetch_from} (add more with --fetch-allow)")
    if where.local_url:
        lines.append(f"  try:   LANCEPILOT_BASE_URL={where.local_url} LANCEPILOT_TOKEN={token} audiopipe send ...")
    else:  # audiopipe's client would refuse: it sends a token over plain http to loopback only
        lines.append("  audiopipe sends to plain http on 127.0.0.1/localhost only: to try it with audiopipe, "
                     "use --host 127.0.0.1 (or 0.0.0.0)")
    return [*lines, "  Ctrl-C to stop"]
