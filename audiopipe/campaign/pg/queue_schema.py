"""procrastinate's tables, created and upgraded by our :func:`audiopipe.campaign.pg.schema.migrate`.

How procrastinate versions its schema (3.10, read in its source): ``procrastinate/sql/schema.sql`` is
the whole schema of the installed version, meant for an empty database
(``SchemaManager.apply_schema``: it fails on a database that has it already), and
``procrastinate/sql/migrations/`` holds one file per change, named ``MM.mm.pp_NN_name.sql`` after the
release that brought it (``pre`` and ``post`` steps of a release sort in order by ``NN``).
procrastinate records nothing in the database about which of them were applied: that is left to the
user's migration tool. We are that tool:

- an empty database gets ``schema.sql``, and ``schema_version`` notes ``procrastinate``'s version;
- a database noted at version V, with a newer procrastinate installed at W, gets every migration file
  of a release after V up to W, in file-name order, and W is noted;
- a database with procrastinate's tables that we did not note is refused: which version made them is
  unknown, so which migrations it lacks is too;
- a database noted at a newer version than installed is refused (a newer audiopipe migrated it).

All of it inside migrate's transaction and advisory lock (procrastinate's SQL holds no statement that
refuses to run in a transaction: no ``CONCURRENTLY``). procrastinate's ``pre``/``post`` split exists
for upgrading while old workers still run; we apply both at once, so workers are upgraded together
(stop them, migrate, start the new ones), as the README's upgrade notes say.
"""

from __future__ import annotations

import re
from pathlib import Path

from procrastinate import __version__ as installed_text
from procrastinate.schema import SchemaManager

from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.errors import SchemaError

COMPONENT = "procrastinate"
Version = tuple[int, int, int]
_FILE = re.compile(r"^(\d+)\.(\d+)\.(\d+)_(\d+)_.*\.sql$")


def parse_version(text: str) -> Version:
    """``3.10.0`` (or ``3.11.0.dev1``) as a tuple that sorts as versions do."""
    numbers = re.findall(r"\d+", text)[:3]
    if len(numbers) < 3:
        raise SchemaError(f"cannot read the procrastinate version {text!r}")
    return int(numbers[0]), int(numbers[1]), int(numbers[2])


INSTALLED = parse_version(installed_text)


def migration_files() -> list[tuple[Version, Path]]:
    """procrastinate's migration files, oldest first, each with the release that brought it."""
    found = []
    for path in Path(SchemaManager.get_migrations_path()).iterdir():
        m = _FILE.match(path.name)
        if m:
            found.append(((int(m[1]), int(m[2]), int(m[3])), path))
    return sorted(found, key=lambda vp: (vp[0], vp[1].name))


def recorded(conn: Connection) -> Version | None:
    """The procrastinate version this database's queue schema is noted at, or None."""
    rows = conn.execute("SELECT version FROM schema_version WHERE component = %s", (COMPONENT,)).fetchall()
    return max((parse_version(r[0]) for r in rows), default=None)


def _show(v: Version) -> str:
    return ".".join(map(str, v))


def bring_up_to_date(conn: Connection) -> list[str]:
    """Create or upgrade procrastinate's tables to the installed version (see the module's docstring).
    Runs inside migrate's transaction and lock. Returns what was applied, in words."""
    from audiopipe.campaign.pg.schema import has_table, record  # schema imports us: a cycle at import time only

    noted = recorded(conn)
    if noted is None:
        if has_table(conn, "procrastinate_jobs"):
            raise SchemaError("the database has procrastinate's tables, but audiopipe did not make them, so which "
                              "version they are is unknown: use a database of audiopipe's own")
        conn.execute(SchemaManager.get_schema())  # no parameters: its % signs stay as they are
        record(conn, COMPONENT, _show(INSTALLED), "procrastinate schema.sql")
        return [f"procrastinate {_show(INSTALLED)} schema"]
    if noted > INSTALLED:
        raise SchemaError(f"the database's job queue was made by procrastinate {_show(noted)}, newer than the "
                          f"installed {_show(INSTALLED)}: upgrade audiopipe (and procrastinate) on this machine")
    applied = []
    for version, path in migration_files():
        if noted < version <= INSTALLED:
            conn.execute(path.read_text(encoding="utf-8"))
            applied.append(f"procrastinate migration {path.name}")
    if noted != INSTALLED:
        record(conn, COMPONENT, _show(INSTALLED), f"upgraded from {_show(noted)}")
        applied.append(f"procrastinate {_show(noted)} → {_show(INSTALLED)}")
    return applied
