"""Where the token may go: a URL read once, strictly, the way the HTTP stack will connect.

Python's ``urllib.parse`` and urllib3 (which requests connects with) read some URLs differently:
``http://evil\\@127.0.0.1/`` is 127.0.0.1 to one and ``evil`` to the other, urllib silently drops
tabs and newlines, an ``@`` after a ``#`` or ``?`` moves the host for one of them. A check made with
one parser can then be bypassed by the other. So a URL is accepted only when nothing in it is
ambiguous and both parsers agree with our own reading, and audiopipe connects to the URL rebuilt
from the parts it checked, never to the string it was given.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

DEFAULT_PORTS = {"http": 80, "https": 443}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# WHATWG reads a host whose last label is a number (decimal, octal or hex) as an IPv4 address, and
# inet_aton takes 127.1 or 0x7f.1 as 127.0.0.1: such hosts are accepted only as plain a.b.c.d.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_CHAR_NAMES = {" ": "a space", "\t": "a tab", "\n": "a newline", "\r": "a carriage return"}


class AmbiguousURL(ValueError):
    """A URL audiopipe will not connect to; the message says why (never the whole URL)."""


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port (the default port filled in): what decides where bytes go."""

    scheme: str
    host: str  # lower case ASCII; an IPv6 address without brackets
    port: int

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"


@dataclass(frozen=True)
class CheckedURL:
    origin: Origin
    path: str   # "" or starting with "/"
    query: str  # without "?"; always "" for a base URL

    def __str__(self) -> str:
        return f"{self.origin}{self.path}" + (f"?{self.query}" if self.query else "")


def check_characters(url: str) -> None:
    """Refuse what parsers strip, skip or read differently: whitespace, control and non-ASCII
    characters (urllib drops tabs and newlines anywhere), and backslashes (a path separator to
    urllib3, part of the user-info to urllib)."""
    for position, char in enumerate(url, 1):
        if char <= " " or char >= "\x7f":
            name = _CHAR_NAMES.get(char) or (f"the non-ASCII character U+{ord(char):04X} (a non-ASCII host "
                                             "name must be written in its xn-- form)" if char > "\x7f"
                                             else f"the control character U+{ord(char):04X}")
            raise AmbiguousURL(f"it contains {name} at position {position}")
    if "\\" in url:
        raise AmbiguousURL("it contains a backslash")


def check_url(url: str, *, base: bool) -> CheckedURL:
    """Read ``url`` strictly; raise :class:`AmbiguousURL` unless every reading agrees.

    ``base``: a base URL may not carry a query or fragment (the endpoint's path is appended to
    it); a redirect target may carry a query, and its fragment is dropped (never sent anyway).
    """
    check_characters(url)
    match = _SCHEME.match(url)
    if not match or match.group(1).lower() not in DEFAULT_PORTS:
        raise AmbiguousURL("it must start with https:// (or http:// for a loopback address)")
    scheme = match.group(1).lower()
    rest = url[match.end():]
    authority = re.match(r"[^/?#]*", rest).group(0)  # type: ignore[union-attr]
    rest = rest[len(authority):]
    rest, hash_mark, _fragment = rest.partition("#")
    path, question_mark, query = rest.partition("?")
    if base and hash_mark:
        raise AmbiguousURL("it has a fragment (#...); a base URL is scheme, host, optional port and path")
    if base and question_mark:
        raise AmbiguousURL("it has a query (?...); a base URL is scheme, host, optional port and path")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise AmbiguousURL("its path has . or .. segments")
    host, port = _split_authority(authority, scheme)
    checked = CheckedURL(Origin(scheme, host, port), path, query)
    _agree_with_parsers(url, checked)
    return checked


def _split_authority(authority: str, scheme: str) -> tuple[str, int]:
    if "@" in authority:
        raise AmbiguousURL("it has user-info (user@ or user:password@ before the host); remove it, "
                           "the token is sent in a header")
    if "%" in authority:
        raise AmbiguousURL("its host is percent-encoded")
    if authority.startswith("["):
        inside, bracket, after = authority[1:].partition("]")
        if not bracket:
            raise AmbiguousURL("its IPv6 address has no closing ]")
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ValueError:
            raise AmbiguousURL(f"[{inside}] is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise AmbiguousURL("something follows the IPv6 address's ] that is not a :port")
        port_text: str | None = after[1:] if after else None
    else:
        host_text, colon, after = authority.partition(":")
        host = _check_host(host_text.lower())
        port_text = after if colon else None
    if port_text is None:
        return host, DEFAULT_PORTS[scheme]
    if not port_text:
        raise AmbiguousURL("it has an empty port (a : with no number after it)")
    if not re.fullmatch(r"0*[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
        raise AmbiguousURL("its port is not a number from 1 to 65535")
    return host, int(port_text)


def _check_host(host: str) -> str:
    if not host:
        raise AmbiguousURL("it has no host")
    if host.endswith("."):
        raise AmbiguousURL(f"its host {host!r} ends in a dot; remove it")
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            address = None
        if address is None or str(address) != host:
            raise AmbiguousURL(f"its host {host!r} is not a plain IPv4 address (four numbers like 127.0.0.1)")
        return host
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise AmbiguousURL(f"its host {host!r} is not a valid host name")
    return host


def _agree_with_parsers(url: str, checked: CheckedURL) -> None:
    """urllib (which the old checks used) and urllib3 (which connects) must both read what we read."""
    try:
        split = urlsplit(url)
        split_port = split.port
        stack = parse_url(url)
    except (ValueError, LocationParseError):
        raise AmbiguousURL("URL parsers cannot read it") from None
    if stack.auth is not None or split.username is not None:
        raise AmbiguousURL("it has user-info (user@ or user:password@ before the host)")
    ours = (checked.origin.scheme, checked.origin.host, checked.origin.port, _upper_escapes(checked.path),
            checked.query)
    readings = {"urllib": (split.scheme, split.hostname, split_port, split.path, split.query),
                "urllib3": (stack.scheme, stack.host, stack.port, stack.path or "", stack.query or "")}
    for name, (scheme, host, port, path, query) in readings.items():
        reading = (scheme, _plain_host(host), DEFAULT_PORTS.get(scheme or "") if port is None else port,
                   _upper_escapes(path), query)
        if reading != ours:
            raise AmbiguousURL(f"URL parsers read it differently ({name} reads host {reading[1]!r}, "
                               f"port {reading[2]})")


def _plain_host(host: str | None) -> str | None:
    if not host:
        return None
    host = host.strip("[]").lower()
    try:
        return str(ipaddress.IPv6Address(host)) if ":" in host else host
    except ValueError:
        return host


def _upper_escapes(path: str) -> str:
    return re.sub(r"%[0-9a-fA-F]{2}", lambda m: m.group(0).upper(), path)


def resolve_redirect(current: CheckedURL, location: str) -> CheckedURL:
    """The URL a redirect's ``Location`` points to, read as strictly as a base URL (raw
    characters checked before urljoin can reinterpret them)."""
    check_characters(location)
    return check_url(urljoin(str(current), location), base=False)


def redact(url: str) -> str:
    """``url`` for a message: user-info, query and fragment (where a password, a signature or a
    pasted token may be) hidden."""
    url = re.sub(r"(?<=://)[^/?#]*@", "...@", url)
    return re.sub(r"([?#]).*", r"\1...", url, flags=re.S)
