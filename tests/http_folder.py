"""A folder served over real HTTP on 127.0.0.1 (what a public bucket or a CDN is to the API), counting
the GETs it answers: the URL-send tests serve a store's folder with it and give its URL as --public-url."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class ServedFolder:
    """``url``: the folder's base URL; ``gets``: the paths asked for, counted (query strings dropped);
    ``queries``: the query strings they came with (a signed URL's signature reaches the store)."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.gets: Counter[str] = Counter()
        self.queries: list[str] = []
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"


@contextmanager
def serve_folder(root: Path) -> Iterator[ServedFolder]:
    """Serve ``root`` (created if missing) until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    served: list[ServedFolder] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            served[0].gets[path] += 1
            served[0].queries.append(query)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: a test reads .gets

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    served.append(ServedFolder(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
