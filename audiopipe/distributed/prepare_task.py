"""The body of the prepare job (task ``audiopipe.prepare``): one unique source prepared once, whichever
worker does it, even when workers die mid-encode.

The job claims the prepare row (see :mod:`audiopipe.campaign.pg.prepares`): nothing to do when it is
ready, failed, or held by a live worker (a duplicate job is harmless). With the claim it reads the
source from the store, runs the normal preparation (:func:`audiopipe.prepare_file`, the recipe's
settings, no cache: the store is the cache) in a scratch folder, puts each part into the store (an
atomic put: no partial file is ever under a key), and ends the prepare in one transaction with the
expansion of its targets into ``sends`` rows and their send tokens. An input the preparation refuses
(not audio, too long with ``on_overflow=fail``...) fails the prepare with its one-line reason, and every
target with it. A worker killed mid-encode leaves the row ``preparing`` under a dead owner: the next
job, or the reaper's, takes it over. Anything else that stops the job (the store, the disk, ffmpeg
missing) gives the claim up for another try; after :data:`MAX_ATTEMPTS` the prepare fails, so that an
input that kills every worker trying it cannot loop forever.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import uuid
from pathlib import Path
from typing import Any

from audiopipe import scratch
from audiopipe.campaign.pg import jobs, prepares, recipes
from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.ledger import PgLedger
from audiopipe.distributed.context import WorkerContext
from audiopipe.errors import AudiopipeError, ToolMissingError, UsageError
from audiopipe.preparation.pipeline import prepare_file
from audiopipe.preparation.results import OutputFile
from audiopipe.preparation.settings import PrepareSettings
from audiopipe.store import Store, StoreError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # claims of one prepare before it fails for good (each one a worker that died or gave up)


class PrepareDone(str, enum.Enum):
    """What a prepare job did."""

    READY = "ready"          # prepared, parts stored, targets expanded
    FAILED = "failed"        # the input was refused (or the tries ran out): its targets failed
    NOTHING = "nothing"      # done already, or held by a live worker
    DEFERRED = "deferred"    # the worker is stopping: the job was deferred again, untouched

    def __str__(self) -> str:
        return self.value


class NoRecipe(AudiopipeError):
    """A prepare job names a recipe the database does not hold (a job from another database?)."""


def prepare_job(ctx: WorkerContext, campaign: str, source: str, recipe: str) -> PrepareDone:
    """Prepare ``source`` with ``recipe`` for ``campaign`` (and every campaign waiting for it)."""
    ledger = ctx.ledger
    if ctx.stop.is_set():  # not claimed: deferred again so that a worker that stays does it
        ledger.db.run(lambda conn: jobs.defer_prepare(conn, campaign, source, recipe), doing="defer a prepare")
        return PrepareDone.DEFERRED
    found = ledger.db.run(lambda conn: recipes.load_recipe(conn, recipe), doing="read a recipe")
    if found is None:
        raise NoRecipe(f"the database has no recipe {recipe[:16]}… for the prepare of {source[:16]}…")
    claim = _claim(ledger, source, recipe)
    if claim is None:
        return PrepareDone.NOTHING
    if claim.took_over:
        log.info("prepare %s…: taken over from the worker %s, which stopped", source[:12], claim.took_over)
    if claim.attempt > MAX_ATTEMPTS:
        why = f"gave up after {MAX_ATTEMPTS} tries: {claim.last_error or 'the worker preparing it stopped'}"
        return _failed(ledger, claim, why)
    try:
        parts = _prepare(ctx.store(found.store), claim, found.settings)
    except (UsageError, ToolMissingError, StoreError) as exc:  # the set-up, not the input: another try
        _release(ledger, claim, one_line(exc))
        raise
    except AudiopipeError as exc:  # the input refused: deterministic, no other try would do better
        return _failed(ledger, claim, one_line(exc))
    except BaseException as exc:   # a disk, a bug, a stop: the claim is given up for another worker
        _release(ledger, claim, one_line(exc))
        raise
    made = ledger.db.run(lambda conn: _ready(conn, claim, parts), doing="record a prepared file")
    if made is None:
        log.warning("prepare %s…: another worker took it over meanwhile; its result stands", source[:12])
        return PrepareDone.NOTHING
    return PrepareDone.READY


def _claim(ledger: PgLedger, source: str, recipe: str) -> prepares.PrepareClaim | None:
    claim_id = uuid.uuid4()  # the same on a try again: a claim whose answer was lost is found, not lost
    return ledger.db.run(lambda conn: prepares.claim_prepare(conn, source, recipe, ledger.worker_id,
                                                             lease=ledger.lease, claim_id=claim_id),
                         doing="claim a prepare")


def _prepare(store: Store, claim: prepares.PrepareClaim, settings: PrepareSettings) -> list[dict[str, Any]]:
    """The source prepared in a scratch folder, each part put into ``store``: the parts as recorded."""
    source = store.open_local(claim.source_key)
    with scratch.temp_dir("prepare") as out:
        result = prepare_file(source, out, dataclasses.replace(settings, cache=False), name="prepared")
        return [_put(store, o) for o in result.outputs]


def _put(store: Store, output: OutputFile) -> dict[str, Any]:
    stored = store.put(Path(output.path), suffix=Path(output.path).suffix.lower())
    return {"key": stored.key, "sha256": stored.sha256, "size": stored.size, "duration": output.duration,
            "content_type": output.content_type, "format": output.format, "mime": output.mime,
            "codec": output.codec, "bitrate": output.bitrate, "part": output.part, "parts": output.parts}


def _ready(conn: Connection, claim: prepares.PrepareClaim, parts: list[dict[str, Any]]) -> dict[str, int] | None:
    made = prepares.finish_ready(conn, claim, parts)
    if made is None and _already(conn, claim, prepares.READY):
        return {}  # written by a try whose answer was lost
    return made


def _failed(ledger: PgLedger, claim: prepares.PrepareClaim, reason: str) -> PrepareDone:
    def work(conn: Connection) -> dict[str, int] | None:
        made = prepares.finish_failed(conn, claim, reason)
        return {} if made is None and _already(conn, claim, prepares.FAILED) else made
    log.info("prepare %s…: failed: %s", claim.source_sha256[:12], reason)
    done = ledger.db.run(work, doing="record a prepare that failed")
    return PrepareDone.FAILED if done is not None else PrepareDone.NOTHING


def _release(ledger: PgLedger, claim: prepares.PrepareClaim, reason: str) -> None:
    try:
        ledger.db.run(lambda conn: prepares.release(conn, claim, reason), doing="give a prepare up", retry_for=5.0)
    except AudiopipeError:
        pass  # the database is away: once this worker's lease runs out, the prepare is taken over anyway


def _already(conn: Connection, claim: prepares.PrepareClaim, state: str) -> bool:
    """Whether the prepare already ended in ``state`` with this very attempt (a lost commit's answer)."""
    row = conn.execute("SELECT state, attempts FROM prepares WHERE source_sha256 = %s AND recipe = %s",
                       (claim.source_sha256, claim.recipe)).fetchone()
    return row is not None and tuple(row) == (state, claim.attempt)


def one_line(exc: BaseException) -> str:
    """The reason an input was refused, on one line, without the store's path of the file."""
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    lines = str(reason).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
