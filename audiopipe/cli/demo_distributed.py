"""``make demo-distributed``: a campaign on a shared database, end to end on this machine.

Starts a throwaway PostgreSQL cluster (``initdb`` and ``pg_ctl`` on a temporary folder, listening on a
Unix socket there only; as the ``postgres`` user when run as root, since PostgreSQL refuses root) and
the sandbox, migrates the schema, plans the demo's recordings and contacts with ``--plan-only`` (the
cron planner), shows ``status`` waiting for workers, runs two workers until nothing is left, shows
``status`` again and what the sandbox received, then stops everything and removes the cluster.
Everything else lives under ``./demo-distributed`` (or the folder given as the first argument).
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from audiopipe.cli.demo import (
    CONTACTS,
    RECORDINGS,
    free_port,
    make_contacts,
    make_recordings,
    say,
    show_received,
    stop_sandbox,
    wait_ready,
)

WORKERS = 2


def server_binaries() -> Path:
    """The folder of initdb and pg_ctl: PATH first, then the newest Debian (or Homebrew) install."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    installed = glob.glob("/usr/lib/postgresql/*/bin/initdb") + glob.glob("/opt/homebrew/opt/postgresql@*/bin/initdb")
    if not installed:
        raise SystemExit("the PostgreSQL server (initdb, pg_ctl) is missing: `make system-deps` installs it")
    newest = sorted(installed, key=lambda p: [int(n) for n in re.findall(r"\d+", p)])[-1]
    return Path(newest).parent


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """A private PostgreSQL cluster with a database ``audiopipe``; yields its URL, removed afterwards."""
    import psycopg

    as_root = os.geteuid() == 0
    binaries = server_binaries()
    folder = Path(tempfile.mkdtemp(prefix="audiopipe-demo-pg-"))  # short: a socket path has ~100 bytes
    if as_root:
        shutil.chown(folder, "postgres", "postgres")

    def pg(*argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
        subprocess.run([*prefix, str(binaries / argv[0]), *argv[1:]], check=True, capture_output=True,
                       env=dict(os.environ, LC_ALL="C"), timeout=120)

    data, log = folder / "data", folder / "log"
    try:
        pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
        pg("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60",
           "-o", f"-k {folder} -c listen_addresses='' -c max_connections=100", "start")
        try:
            with psycopg.connect(f"postgresql://postgres@/postgres?host={folder}", autocommit=True) as conn:
                conn.execute("CREATE DATABASE audiopipe")
            yield f"postgresql://postgres@/audiopipe?host={folder}"
        finally:
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    except subprocess.CalledProcessError as exc:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise SystemExit(f"PostgreSQL could not start: {exc.stderr.decode(errors='replace').strip()}\n{tail}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_campaign(exe: list[str], root: Path, env: dict[str, str]) -> bool:
    """Steps 4 to 9, with the database and the sandbox running."""
    say("4. audiopipe db migrate: the schema, made by audiopipe itself")
    subprocess.run([*exe, "db", "migrate"], env=env, check=True)
    plan = [*exe, "batch", str(root / "recordings"), "--contacts", str(root / "contacts.csv"), "--campaign", "demo",
            "--store", str(root / "store"), "--rate", "20", "--plan-only"]
    say("5. the planner (what a timer runs): the plan and its jobs, in one transaction")
    print("   $ audiopipe batch " + " ".join(plan[4:]), flush=True)
    planned = subprocess.run(plan, env=env)
    print(f"   exit status {planned.returncode}")
    say("6. audiopipe status: planned, waiting for workers")
    subprocess.run([*exe, "status"], env=env)
    say(f"7. {WORKERS} workers (what systemd runs), until nothing is left")
    workers = [subprocess.Popen([*exe, "worker", "--until-idle", "--concurrency", "4"], env=env)
               for _ in range(WORKERS)]
    codes = [w.wait(timeout=900) for w in workers]
    print(f"   exit statuses {codes}")
    say("8. audiopipe status: every message accounted for")
    status = subprocess.run([*exe, "status"], env=env)
    say("9. what the sandbox received")
    messages, dupes = show_received(exe, root, env)
    return (planned.returncode == 0 and codes == [0] * WORKERS and status.returncode == 0 and not dupes
            and messages == len(CONTACTS) * len(RECORDINGS))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "demo-distributed").absolute()
    for sub in ("sandbox", "store", "state"):
        shutil.rmtree(root / sub, ignore_errors=True)
    say(f"1. making demo recordings in {root / 'recordings'}")
    make_recordings(root / "recordings")
    make_contacts(root / "contacts.csv")
    exe = [sys.executable, "-m", "audiopipe"]
    port, token = free_port(), "demo-" + secrets.token_hex(8)
    env = dict(os.environ, LANCEPILOT_BASE_URL=f"http://127.0.0.1:{port}/api/v3", LANCEPILOT_TOKEN=token,
               XDG_STATE_HOME=str(root / "state"), AUDIOPIPE_SETTLE="0")
    say("2. a throwaway PostgreSQL cluster (initdb, pg_ctl; a Unix socket only)")
    with throwaway_cluster() as url:
        env["AUDIOPIPE_DATABASE_URL"] = url
        print(f"   AUDIOPIPE_DATABASE_URL={url}")
        say(f"3. starting the sandbox on {env['LANCEPILOT_BASE_URL']}")
        sandbox = subprocess.Popen([*exe, "sandbox", "--port", str(port), "--data", str(root / "sandbox"),
                                    "--latency", "0.05"], env=dict(env, AUDIOPIPE_SANDBOX_TOKEN=token))
        try:
            wait_ready(f"http://127.0.0.1:{port}/_sandbox/health", sandbox)
            ok = run_campaign(exe, root, env)
        finally:
            say("10. stopping the sandbox and the cluster")
            stop_sandbox(sandbox)
    print("\ndemo " + ("finished: every message sent exactly once, by two workers" if ok
                       else "found a problem (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
