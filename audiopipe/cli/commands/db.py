"""``audiopipe db``: the shared database itself. ``db migrate`` creates or upgrades its schema (audiopipe's
tables and the job queue's) and says the versions before and after."""

from __future__ import annotations

import json

import click

from audiopipe.cli.console import say
from audiopipe.cli.database import REACH_HINT, database_option, scrubbing
from audiopipe.cli.failures import Command
from audiopipe.cli.options import json_option


@click.group("db")
def db_group() -> None:
    """The PostgreSQL database a campaign shared by many workers lives in.

    \b
    Examples:
      audiopipe db migrate --database postgresql://audiopipe@db.example/audiopipe
      AUDIOPIPE_DATABASE_URL=postgresql:///audiopipe audiopipe db migrate
    """


@db_group.command("migrate", cls=Command)
@database_option
@json_option("The versions before and after, and the steps applied, as JSON.")
def migrate_cmd(*, database: str | None, as_json: bool) -> None:
    """Create the schema of the database, or bring it up to this audiopipe's version.

    \b
    The schema is audiopipe's tables (the ledger, workers, paces, prepares) and
    the tables of procrastinate, the job queue. Each step is applied once, all
    of them in one transaction: a failed migration leaves the schema as it was.
    Running it again does nothing; running it from several machines at once is
    safe (they take turns). `audiopipe worker` and `audiopipe batch --database`
    also migrate on start; run it yourself before starting workers of a new
    version: stop the old workers, migrate, start the new ones.

    \b
    Examples:
      audiopipe db migrate --database postgresql://audiopipe@db.example/audiopipe
      audiopipe db migrate --json

    \b
    Exit status: 0 the schema is up to date; 1 the database cannot be reached;
    2 no database named, or its schema is newer than this audiopipe (upgrade it).
    """
    from audiopipe.campaign.pg import DatabaseUnavailable, database_url, describe, migrate, versions
    from audiopipe.campaign.pg.connection import connect

    url = database_url(database)
    with scrubbing(url):
        try:
            conn = connect(url)
        except DatabaseUnavailable as exc:
            raise DatabaseUnavailable(f"{exc}: {REACH_HINT}") from None
        with conn:
            before = versions(conn)
            applied = migrate(conn)
            after = versions(conn)
    where = describe(url)
    if as_json:
        click.echo(json.dumps({"database": where, "before": before, "after": after, "applied": applied}))
        return
    if not applied:
        say(f"database {where}: schema up to date ({_versions(after)}); nothing to do")
        return
    say(f"database {where}: schema migrated from {_versions(before)} to {_versions(after)}")
    for step in applied:
        say(f"  applied {step}")


def _versions(found: dict[str, str]) -> str:
    """``audiopipe 2, procrastinate 3.10.0``, or ``none`` for a database never migrated."""
    return ", ".join(f"{component} {version}" for component, version in sorted(found.items())) or "none"
