"""A throwaway PostgreSQL cluster for the tests: real server, no mocks, nothing shared with the machine.

One cluster per test session (``initdb`` in a temporary folder, ``pg_ctl start`` listening on a Unix
socket in that folder only: no TCP port, so parallel sessions and a PostgreSQL already running on the
machine never meet it), stopped and removed at the end. Each test gets a database of its own, made by
``CREATE DATABASE ... TEMPLATE`` from one migrated once per session, which takes milliseconds.

PostgreSQL refuses to run as root, and CI and these sessions run as root: then every server command
runs as the ``postgres`` user (``runuser -u postgres --``, the user the Debian package creates) on a
folder that user owns. Not as root, the commands run directly.

The server runs with ``fsync=off``: a test never crashes the kernel, only server processes
(:meth:`PgCluster.restart_immediate` is ``pg_ctl restart -m immediate``, a crash of every server process), and
a commit still reaches the kernel before it returns, so what a test checks after such a crash is
what a real crash keeps. Durability against power loss is PostgreSQL's own business, not ours to test.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

MISSING = ("PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH nor in /usr/lib/postgresql/*/bin "
           "(Homebrew: /opt/homebrew/opt/postgresql@*/bin): "
           "`make test` installs them (the Debian package postgresql), or install them yourself")
PORT = 5432  # names the socket file only: the cluster listens on no TCP address
TEMPLATE = "audiopipe_template"


def server_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then the newest Debian (or Homebrew) install."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    installed = glob.glob("/usr/lib/postgresql/*/bin/initdb") + glob.glob("/opt/homebrew/opt/postgresql@*/bin/initdb")
    newest = sorted(installed, key=lambda p: [int(n) for n in re.findall(r"\d+", p)])
    return Path(newest[-1]).parent if newest else None


@dataclass
class PgCluster:
    """A private PostgreSQL cluster: its folder (socket, data, log) and how to reach it."""

    bin: Path
    folder: Path
    as_postgres: bool
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.folder}&port={PORT}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        done = subprocess.run([*prefix, str(self.bin / argv[0]), *argv[1:]], capture_output=True, text=True,
                              env={**os.environ, "LC_ALL": "C"}, timeout=120)
        if check and done.returncode != 0:
            log = self.folder / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")
        return done

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")

    def _options(self) -> str:
        return (f"-k {self.folder} -p {PORT} -c listen_addresses='' -c fsync=off -c full_page_writes=off "
                "-c max_connections=200 -c shared_buffers=32MB")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", self._options(),
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def restart_immediate(self) -> None:
        """Crash every server process at once and start again (crash recovery replays the WAL): what
        a power cut does to the server, without the kernel's caches going with it."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", self._options(),
                  "-m", "immediate", "-w", "-t", "60", "restart")

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg  # here, not at the top: every test session loads this module, most never use it

        return psycopg.connect(self.url(), autocommit=True)

    def new_database(self, template: str = TEMPLATE) -> str:
        """A fresh database copied from ``template`` (the migrated one, or ``template0`` for an empty one)."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _make_folder(as_postgres: bool) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="audiopipe-pg-"))  # short: a socket path has ~100 bytes
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    return folder


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's cluster, with a migrated template database; a clear failure when PostgreSQL is missing."""
    binaries = server_binaries()
    if binaries is None:
        pytest.fail(MISSING, pytrace=False)
    as_postgres = os.geteuid() == 0
    cluster = PgCluster(binaries, _make_folder(as_postgres), as_postgres)
    try:
        cluster.init()
        cluster.start()
        with cluster.admin() as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}" TEMPLATE template0')
        from audiopipe.campaign.pg.connection import connect
        from audiopipe.campaign.pg.schema import migrate

        with connect(cluster.url(TEMPLATE)) as conn:
            migrate(conn)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a fresh database with audiopipe's schema, dropped after the test."""
    name = pg_cluster.new_database()
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


@pytest.fixture
def pg_empty_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a fresh, empty database (no schema at all), dropped after the test."""
    name = pg_cluster.new_database("template0")
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


@pytest.fixture
def open_pg(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Opens PgLedgers on the test's database (journal in the test's folder), all closed after the test.
    Keyword arguments are PgLedger's."""
    from audiopipe.campaign.pg import PgLedger

    opened: list[PgLedger] = []

    def opener(**settings: Any) -> PgLedger:
        settings.setdefault("journal_dir", tmp_path / "journal")
        ledger = PgLedger(pg_url, **settings)
        opened.append(ledger)
        return ledger

    yield opener
    for ledger in opened:
        ledger.close()
