"""Request bodies, capped as they stream: each request's cap by its kind, the meter every read of the
body goes through (chunked bodies too: werkzeug caps only what a ``Content-Length`` announces), and
the 4xx a body that is too large, malformed or late turns into.

The meter sits in the WSGI environ under :data:`METER_KEY`, where the app installs it and the
connection handler asks it afterwards whether the body was read to its end (only then can the
connection be kept alive: the next request starts right after this body).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Protocol

from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge
from werkzeug.http import parse_options_header

from audiopipe.sandbox.config import SandboxConfig

METER_KEY = "audiopipe.sandbox.body"  # the app's BodyMeter in the environ, read back by the handler


class BodyTooLarge(RequestEntityTooLarge):
    """A body is over a cap: ``proxy`` says whose, nginx's (413 HTML) or PHP's (413 JSON)."""

    def __init__(self, limit: int, *, proxy: bool = False) -> None:
        super().__init__(f"the body is over {limit} bytes")
        self.limit, self.proxy = limit, proxy


class MalformedBody(BadRequest):
    description = "The request body is malformed: bad chunked encoding, or shorter than its Content-Length."


class BodyTimeout(HTTPException):
    code = 408
    description = "The request body did not arrive in time."


@dataclass(frozen=True)
class BodyLimit:
    limit: int
    proxy: bool  # nginx's client_max_body_size rather than PHP's post_max_size or our JSON cap


def body_limit(environ: dict[str, Any], config: SandboxConfig) -> BodyLimit:
    """The cap on this request's body: a multipart upload may be as large as PHP's post_max_size,
    anything else is a small JSON or form message; nginx's limit, when lower, comes first."""
    mimetype = parse_options_header(environ.get("CONTENT_TYPE", ""))[0].lower()
    own = config.post_limit if mimetype == "multipart/form-data" else config.max_json_body
    proxy = config.proxy_body_limit
    if proxy is not None and proxy <= own:
        return BodyLimit(proxy, proxy=True)
    return BodyLimit(own, proxy=False)


class _ReadsInto(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


class BodyMeter(io.RawIOBase):
    """The request body as the app reads it (de-chunked), counted. Over the limit it raises
    :class:`BodyTooLarge` at once: a chunked body is cut off as it streams, not after. A read
    that times out or finds bad framing raises the matching 4xx, never an OSError."""

    def __init__(self, stream: _ReadsInto, limit: BodyLimit) -> None:
        super().__init__()
        self._stream = stream
        self.limit = limit
        self.count = 0
        self.ended = False  # the stream said it was over (for chunked: its last chunk came)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.ended:
            return 0
        room = self.limit.limit - self.count + 1  # one byte past the limit proves the body is over it
        view = memoryview(buffer).cast("B")[:room]
        try:
            n = self._stream.readinto(view) or 0
        except TimeoutError:
            raise BodyTimeout() from None
        except (OSError, ValueError):  # how werkzeug's de-chunker and a reset socket report
            raise MalformedBody() from None
        if not n:
            self.ended = True
            return 0
        self.count += n
        if self.count > self.limit.limit:
            raise BodyTooLarge(self.limit.limit, proxy=self.limit.proxy)
        return n


def body_read_to_end(environ: dict[str, Any]) -> bool:
    """Whether the app read the request body to its end, so the next request starts right after."""
    meter = environ.get(METER_KEY)
    if environ.get("wsgi.input_terminated"):  # chunked
        return isinstance(meter, BodyMeter) and meter.ended
    length = environ.get("CONTENT_LENGTH") or "0"
    if length == "0":
        return True
    return isinstance(meter, BodyMeter) and str(meter.count) == length
