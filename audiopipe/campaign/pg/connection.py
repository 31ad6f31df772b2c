"""Reaching the database: which one (a URL given, else ``AUDIOPIPE_DATABASE_URL``), how it is named in
messages (never with its password), and one way to run work on it that rides out a short outage.

Every worker talks to PostgreSQL through a small pool of connections (psycopg_pool): a worker's threads
share it, a connection broken by a server restart is noticed when it is taken (``check``) and replaced,
and work that fails because the server went away is tried again until ``retry_for`` seconds have
passed. The pool's own reconnection gives up after as long, so that a later request connects at once
rather than waiting out the pool's growing back-off from a long outage. Only work that is safe to run
twice is retried that way: each caller says so by using :meth:`Database.run`; the claim, which is not
by itself, has its own way back (see :mod:`audiopipe.campaign.pg.claims`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from audiopipe.campaign.pg.errors import DatabaseUnavailable, NoDatabase

ENV_URL = "AUDIOPIPE_DATABASE_URL"
Connection = psycopg.Connection[TupleRow]
T = TypeVar("T")


def database_url(given: str | None = None) -> str:
    """The database to use: ``given``, else ``$AUDIOPIPE_DATABASE_URL``."""
    url = given or os.environ.get(ENV_URL)
    if not url:
        raise NoDatabase(f"no database named: give --database URL or set {ENV_URL} "
                         "(e.g. postgresql://audiopipe@db.example/audiopipe)")
    return url


def describe(url: str) -> str:
    """The database as messages name it: user, host and database, never the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the database (its URL could not be read)"
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


def reason(exc: BaseException) -> str:
    """The server's or the driver's own words, on one line."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def connect(url: str, *, autocommit: bool = True) -> Connection:
    """One connection, outside any pool (migrations, heartbeats), or DatabaseUnavailable saying why."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the database {describe(url)}: {reason(exc)}") from None


class Database:
    """A pool of connections to one database, and :meth:`run` to do retryable work on it."""

    def __init__(self, url: str, *, size: int = 4, retry_for: float = 30.0) -> None:
        self.url = url
        self.location = describe(url)
        self.retry_for = retry_for
        self.pool = ConnectionPool(url, min_size=1, max_size=max(size, 1), open=False,
                                   kwargs={"autocommit": True, "connect_timeout": 10},
                                   check=ConnectionPool.check_connection, timeout=max(retry_for, 1.0),
                                   reconnect_timeout=max(retry_for, 1.0), name="audiopipe")

    def open(self) -> None:
        try:
            self.pool.open(wait=True, timeout=max(self.retry_for, 1.0))
        except psycopg.OperationalError as exc:
            self.pool.close()
            raise DatabaseUnavailable(f"cannot reach the database {self.location}: {reason(exc)}") from None

    def run(self, work: Callable[[Connection], T], *, doing: str, retry_for: float | None = None) -> T:
        """``work(conn)`` on a pooled connection (autocommit: ``work`` opens its own transaction when it
        needs one). Tried again while the server is unreachable, for up to ``retry_for`` seconds:
        ``work`` must therefore be safe to run twice (its first run may have committed)."""
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        delay = 0.05
        while True:
            try:
                with self.pool.connection() as conn:
                    return work(conn)
            except psycopg.OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(f"cannot {doing} in the database {self.location}: "
                                              f"{reason(exc)}") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def close(self) -> None:
        self.pool.close()


def fetch_all(conn: Connection, sql: Any, args: Any = None) -> list[TupleRow]:
    """Rows of one query (a small helper so callers read as SQL, not cursor handling)."""
    return conn.execute(sql, args).fetchall()
