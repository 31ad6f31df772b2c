"""The sandbox's answers, in the shapes the real API gives them: Laravel's JSON bodies, and the HTML
pages of the nginx proxy in front of it (docs/api.md §1-2). Nothing here decides; it only words."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Response

_NGINX_PAGE = (
    "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n"
    "<center><h1>{status}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
NGINX_413 = _NGINX_PAGE.format(status="413 Request Entity Too Large")
NGINX_502 = _NGINX_PAGE.format(status="502 Bad Gateway")

MSG_POST_TOO_LARGE = "The POST data is too large."  # Laravel's PostTooLargeException, rendered as JSON


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def html_answer(status: int, body: str) -> Response:
    return Response(body, status=status, mimetype="text/html")


def not_found() -> Response:
    return json_answer(404, {"message": "Resource not found.", "status": 404})


def unauthenticated() -> Response:
    return json_answer(401, {"message": "Unauthenticated."})


def server_error() -> Response:
    """Laravel's 500 in production: no detail."""
    return json_answer(500, {"message": "Server Error"})


def invalid(*messages: str) -> Response:
    """A 422 that names what is wrong with the ``file`` field."""
    return json_answer(422, {"message": "Validation error", "errors": {"file": list(messages)}})


def created(data: dict[str, Any]) -> Response:
    return json_answer(201, {"status": 201, "message": "Resource created successfully.", "data": data})


def too_many_attempts(retry_after: int, limit: int) -> Response:
    """Laravel's throttle answer: 429 with when to try again."""
    return json_answer(429, {"message": "Too Many Attempts."}, headers={
        "Retry-After": str(retry_after),
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": "0",
    })


def method_not_allowed(method: str, path: str, allowed: list[str]) -> Response:
    return json_answer(405, {"message": f"The {method} method is not supported for route {path}. "
                                        f"Supported methods: {', '.join(allowed)}."})
