"""The database's schema, created and brought up to date by audiopipe itself, versioned.

``schema_version`` records, per component, every version applied and when: ``audiopipe`` (our steps,
:mod:`audiopipe.campaign.pg.migrations`) and ``procrastinate`` (the job queue's tables, see
:mod:`audiopipe.campaign.pg.queue_schema`). :func:`migrate` applies what is missing, all in one transaction
(PostgreSQL's DDL is transactional: a migration that fails leaves the schema as it was), under an
advisory lock, so that two processes migrating at once (two workers starting together) take turns
and the second finds nothing left to do. A database whose schema is newer than this audiopipe knows
is refused rather than used: its meaning may have changed under us.
"""

from __future__ import annotations

from audiopipe.campaign.pg import queue_schema
from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.errors import SchemaError
from audiopipe.campaign.pg.migrations import STEPS

COMPONENT = "audiopipe"
# One lock for everything that changes the schema: pg_advisory_xact_lock takes a bigint; these are
# the bytes of "audiopip" (below 2**63, so a valid one), an arbitrary but recognisable number.
MIGRATE_LOCK = int.from_bytes(b"audiopip", "big")
LATEST = STEPS[-1].version
UPGRADE_HINT = "run `audiopipe db migrate` (also done by `audiopipe batch --database` and `audiopipe worker`)"

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    component  text NOT NULL,
    version    text NOT NULL,
    about      text,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)"""


def migrate(conn: Connection) -> list[str]:
    """Apply every missing step, ours and procrastinate's; safe to run again and from many processes
    at once. Returns what was applied, in words (nothing when the schema was up to date)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute(VERSION_TABLE)
        done = ours(conn)
        if done > LATEST:
            raise _too_new(done)
        applied: list[str] = []
        for step in STEPS:
            if step.version > done:
                conn.execute(step.sql)  # no parameters: sent as it is, several statements at once
                record(conn, COMPONENT, str(step.version), step.about)
                applied.append(f"audiopipe schema {step.version}: {step.about}")
        applied += queue_schema.bring_up_to_date(conn)
    return applied


def record(conn: Connection, component: str, version: str, about: str) -> None:
    conn.execute("INSERT INTO schema_version (component, version, about) VALUES (%s, %s, %s) "
                 "ON CONFLICT DO NOTHING", (component, version, about))


def ours(conn: Connection) -> int:
    """The newest of our steps this database has (0: none, or no schema_version table yet)."""
    if not has_table(conn, "schema_version"):
        return 0
    row = conn.execute("SELECT max(version::integer) FROM schema_version WHERE component = %s",
                       (COMPONENT,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def versions(conn: Connection) -> dict[str, str]:
    """Per component, the version this database's schema is at (empty for a database never migrated)."""
    if not has_table(conn, "schema_version"):
        return {}
    found = {COMPONENT: str(ours(conn))} if ours(conn) else {}
    queue = queue_schema.recorded(conn)
    if queue is not None:
        found[queue_schema.COMPONENT] = ".".join(map(str, queue))
    return found


def check(conn: Connection) -> None:
    """Refuse a database whose schema is missing, older or newer than this audiopipe's (for readers,
    such as ``audiopipe status``, which never change a database)."""
    done = ours(conn)
    if done > LATEST:
        raise _too_new(done)
    if done < LATEST:
        state = "has no audiopipe schema" if done == 0 else f"has audiopipe schema {done}, not {LATEST}"
        raise SchemaError(f"the database {state}: {UPGRADE_HINT}")


def has_table(conn: Connection, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _too_new(done: int) -> SchemaError:
    return SchemaError(f"the database has audiopipe schema {done}, newer than this audiopipe knows ({LATEST}): "
                       "it was migrated by a newer audiopipe; upgrade this one (install the same version on "
                       "every machine)")
