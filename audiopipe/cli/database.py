"""The shared database a command works on (``--database``, ``AUDIOPIPE_DATABASE_URL``) and the store of
prepared files (``--store``, ``AUDIOPIPE_STORE``): the options, which ledger a command that takes both
``--state`` and ``--database`` uses, and opening the database with errors a person can act on.

A database URL may hold a password: it is never printed. Messages name the database as
:func:`audiopipe.campaign.pg.describe` does, and any error text that still holds the password (a
driver's message about a malformed URL) has it blanked out here, the last place before the terminal.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from audiopipe.errors import AudiopipeError, UsageError

if TYPE_CHECKING:
    from audiopipe.campaign.pg import PgLedger

DATABASE_ENV = "AUDIOPIPE_DATABASE_URL"
STORE_ENV = "AUDIOPIPE_STORE"
REACH_HINT = f"check that PostgreSQL runs there and that --database (or {DATABASE_ENV}) names it"

database_option = click.option(
    "--database", "database", metavar="URL", envvar=DATABASE_ENV, default=None,
    help=f"The PostgreSQL database of a campaign shared by many workers, e.g. "
         f"postgresql://audiopipe@db.example/audiopipe [env {DATABASE_ENV}]. Its password is never printed.")

store_option = click.option(
    "--store", "store", metavar="DIR", envvar=STORE_ENV, default=None,
    help="Where prepared files are kept for every worker to read: a folder every machine mounts at the "
         f"same path (content-addressed; workers find it in the campaign's settings) [env {STORE_ENV}].")


def database_chosen(database: str | None, *, state_given: bool) -> str | None:
    """The database a command with both ``--state`` and ``--database`` uses, or None for the SQLite
    ledger: ``--state`` typed on the command line wins over ``AUDIOPIPE_DATABASE_URL`` from the
    environment; both typed is a mistake."""
    if database is None:
        return None
    ctx = click.get_current_context()
    from_env = ctx.get_parameter_source("database") == click.core.ParameterSource.ENVIRONMENT
    if state_given and from_env:
        return None
    if state_given:
        raise UsageError("give --state (an SQLite ledger) or --database (a shared one), not both")
    return database


def state_typed() -> bool:
    """Whether ``--state`` was given on the command line (not from ``AUDIOPIPE_STATE`` or the default)."""
    return click.get_current_context().get_parameter_source("state_path") == click.core.ParameterSource.COMMANDLINE


def scrubbed(text: str, url: str) -> str:
    """``text`` without the password of ``url`` in it (a driver's message may quote the URL)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:  # a URL the driver cannot read: blank what looks like user:password@
        password = url.split("://", 1)[-1].split("@", 1)[0].partition(":")[2] if "@" in url else None
    return text.replace(str(password), "***") if password else text


@contextmanager
def scrubbing(url: str) -> Iterator[None]:
    """Library errors raised within lose the password of ``url`` from their message (type kept)."""
    try:
        yield
    except AudiopipeError as exc:
        exc.args = tuple(scrubbed(a, url) if isinstance(a, str) else a for a in exc.args)
        raise


@contextmanager
def database_ledger(url: str | None, *, create: bool, lease: float = 60.0) -> Iterator[PgLedger]:
    """The shared ledger at ``url`` (else ``AUDIOPIPE_DATABASE_URL``), closed afterwards. ``create``:
    bring its schema up to date first (commands that work on it); readers refuse a schema that needs it.
    An unreachable database is one line saying what to check."""
    from audiopipe.campaign.pg import DatabaseUnavailable, PgLedger, database_url

    given = database_url(url)
    with scrubbing(given):
        try:
            ledger = PgLedger(given, create=create, lease=lease, pool_size=2, retry_for=5.0)
        except DatabaseUnavailable as exc:
            raise DatabaseUnavailable(f"{exc}: {REACH_HINT}") from None
        with ledger:
            yield ledger
