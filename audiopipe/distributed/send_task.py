"""The body of a send token (task ``audiopipe.send``): one send of one campaign, made at most once.

A token is fungible: "one send of campaign C may be made". Its job waits for the campaign's shared
pace *before* claiming (a worker killed while waiting leaves nothing in flight), claims one ready row
(committed ``sending`` before the request), fetches the prepared part from the campaign's store, makes
exactly one request and records the outcome fenced by the claim's attempt. The outcome is read by
:func:`audiopipe.send.answers.outcome_of` and recorded as the embedded batch records it
(:data:`audiopipe.campaign.sender.LEDGER_STATE`): only a created message is sent, only what may have
been created is unknown (never tried again without a person), everything definitely not created is
deferred, with the token of its next try committed in the same transaction (see
:mod:`audiopipe.campaign.pg.jobs`). A 429 pauses the campaign for every worker for its Retry-After; a 401
stops the campaign everywhere.

A job does not stop at its own token: while sends are ready it takes more waiting tokens of its
campaign from the queue (:func:`audiopipe.campaign.pg.jobs.take_token`, through procrastinate's cancel
function), up to :data:`SENDS_PER_JOB`, one send each. procrastinate's own work per job (fetch, finish,
a thread hop, its events) is then paid once for several sends; tokens stay one per send.

By URL (the campaign's ``send_by`` setting), the request gives the API the prepared part's URL in the
store instead of its bytes: presigned just before the request (valid the campaign's ``url_ttl`` from
then) or under its ``public_url``. The row records ``sent_by`` and keeps the store key, never the URL.

A stopping worker (SIGTERM) claims nothing more: a token not yet claimed is deferred again for a
worker that stays, and a request already on its way finishes and is recorded.
"""

from __future__ import annotations

import enum
import logging
import random
from pathlib import Path

from audiopipe.campaign.ledger import DEFERRED, FAILED, SENT, UNKNOWN, RowStatus
from audiopipe.campaign.pg import jobs, pace
from audiopipe.campaign.pg.campaigns import CampaignSettings
from audiopipe.campaign.pg.claims import Claim
from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.sender import AUTH_STOPPED, LEDGER_STATE
from audiopipe.distributed.context import WorkerContext
from audiopipe.errors import AudiopipeError, SendError
from audiopipe.send.answers import Outcome, outcome_of
from audiopipe.send.by_url import SendBy, file_url
from audiopipe.send.client import CONTENT_TYPES
from audiopipe.send.retry import RetryPolicy
from audiopipe.store import StoreError

log = logging.getLogger(__name__)

RETRY = RetryPolicy()       # the backoff of a definite not-sent outcome without a Retry-After
STORE_RETRY = 30.0          # a prepared file the store cannot give now: tried again this much later
RECHECK = 0.5               # a token that found a row due but taken: looks again this much later
SENDS_PER_JOB = 8           # tokens one job carries out at most: procrastinate's cost per job is paid once


class TokenEnd(str, enum.Enum):
    """How one token's job ended (procrastinate logs it as the job's result)."""

    SENT = "sent"
    DEFERRED = "deferred"      # definitely not sent: its retry token is queued (if it has tries left)
    UNKNOWN = "unknown"        # may have been created: left for a person
    FAILED = "failed"          # refused for good
    REQUEUED = "requeued"      # the worker is stopping: the token went back to the queue, nothing claimed
    RESCHEDULED = "rescheduled"  # nothing ready yet: the token comes back when the next send is due
    NOTHING = "nothing"        # nothing left for it to do: a spare token, ended

    def __str__(self) -> str:
        return self.value


_ENDS = {SENT: TokenEnd.SENT, DEFERRED: TokenEnd.DEFERRED, UNKNOWN: TokenEnd.UNKNOWN, FAILED: TokenEnd.FAILED}


def send_token(ctx: WorkerContext, campaign: str, *, sends: int = SENDS_PER_JOB) -> TokenEnd:
    """The token of a job of ``campaign``, then up to ``sends - 1`` more waiting tokens of it taken
    from the queue, one send each (see the module's docstring). Returns how the last one ended."""
    end = one_token(ctx, campaign)
    ctx.note(str(end))
    for _ in range(sends - 1):
        if end not in _ENDS.values() or ctx.stop.is_set():
            break  # nothing was ready, or the worker is stopping: leave the queue's tokens to their jobs
        if not ctx.ledger.db.run(lambda conn: jobs.take_token(conn, campaign), doing="take a send token"):
            break
        end = one_token(ctx, campaign)
        ctx.note(str(end))
    return end


def one_token(ctx: WorkerContext, campaign: str) -> TokenEnd:
    """One token of ``campaign``: wait for the pace, claim, send, record."""
    if ctx.stop.is_set():
        return _requeue(ctx, campaign)
    settings = ctx.campaign_settings(campaign)
    if not _my_turn(ctx, campaign, settings) or ctx.stop.is_set():
        return _requeue(ctx, campaign)
    claimed = ctx.ledger.claim(limit=1, campaign=campaign)
    if not claimed:
        return _nothing_ready(ctx, campaign)
    return send_claimed(ctx, claimed[0], settings)


def _my_turn(ctx: WorkerContext, campaign: str, settings: CampaignSettings) -> bool:
    """Wait for this send's slot of the campaign's pace; with no rate, only for a 429's pause (a read,
    not a booking: no write per send for a pace that limits nothing)."""
    if settings.rate:
        return ctx.ledger.wait_turn(campaign, ctx.stop)
    return pace.wait_pause(ctx.ledger.db, campaign, ctx.stop)


def _requeue(ctx: WorkerContext, campaign: str) -> TokenEnd:
    ctx.ledger.db.run(lambda conn: jobs.defer_tokens(conn, campaign, 1), doing="requeue a send token")
    return TokenEnd.REQUEUED


def _nothing_ready(ctx: WorkerContext, campaign: str) -> TokenEnd:
    """No row of ``campaign`` could be claimed: come back when the next is due, unless enough other
    tokens are queued for the sends to come (a spare token ends; see jobs.sends_to_come)."""
    def decide(conn: Connection) -> TokenEnd:
        with conn.transaction():
            to_come, due = jobs.sends_to_come(conn, campaign)
            others = jobs.queued_tokens(conn, campaign) - 1  # this token's job is 'doing'
            if to_come == 0 or others >= to_come:
                return TokenEnd.NOTHING
            jobs.defer_tokens(conn, campaign, 1, in_seconds=max(due or 0.0, RECHECK))
            return TokenEnd.RESCHEDULED
    return ctx.ledger.db.run(decide, doing="reschedule a send token")


def upload_name(claim: Claim, suffix: str) -> str:
    """The file name the API is given: the source's stem, the part when split, the prepared suffix."""
    stem = Path(claim.file).stem or "audio"
    return f"{stem}{f'.part{claim.key.part}of{claim.parts}' if claim.parts > 1 else ''}{suffix}"


def send_claimed(ctx: WorkerContext, claim: Claim, settings: CampaignSettings) -> TokenEnd:
    """Send one claimed row and record its outcome (every path records one: the row never stays
    ``sending`` under this live worker)."""
    mode = settings.mode
    how = mode.send_by.value
    try:
        if not claim.stored:
            raise StoreError("the send has no prepared file in the store (planned without --store?)")
        store = ctx.store(settings.store)
        target: str | Path = file_url(store, claim.stored, mode) if mode.by_url else store.open_local(claim.stored)
        client = ctx.client()
    except (StoreError, OSError) as exc:  # nothing was sent: later, maybe from a worker that sees the file
        return _record(ctx, claim, DEFERRED, error=f"not sent: {exc}", retry_in=STORE_RETRY)
    key = claim.key
    try:
        if mode.send_by is SendBy.URL:
            msg = client.send_once(key.workspace, key.contact, str(target))
        else:
            path = Path(target)
            msg = client.send_once(key.workspace, key.contact, path, filename=upload_name(claim, path.suffix),
                                   content_type=CONTENT_TYPES.get(path.suffix.lower()))
    except SendError as exc:
        return _record_error(ctx, claim, exc, how)
    except AudiopipeError as exc:  # refused before any request (a malformed contact id...): the same again fails
        return _record(ctx, claim, FAILED, error=str(exc))
    except BaseException as exc:   # a bug mid-request: the message may exist; never sent again without a person
        _record(ctx, claim, UNKNOWN, error=f"the worker failed while sending ({type(exc).__name__}): {exc}",
                sent_by=how)
        raise
    return _record(ctx, claim, SENT, message_id=msg.id, sent_by=how)


def _record_error(ctx: WorkerContext, claim: Claim, exc: SendError, sent_by: str) -> TokenEnd:
    outcome = outcome_of(exc)
    state = LEDGER_STATE[outcome]
    campaign = claim.key.campaign
    retry_in = 0.0
    if outcome is Outcome.STOP:
        ctx.ledger.stop_campaign(campaign, AUTH_STOPPED)   # before the result: it then gets no retry token
    elif state == DEFERRED:
        retry_in = RETRY.delay(claim.attempt, exc, random.Random())
        if outcome is Outcome.SLOW_DOWN:
            ctx.ledger.pause(campaign, retry_in)           # every worker of the campaign waits it out
    return _record(ctx, claim, state, error=str(exc), status=exc.status, retry_in=retry_in, sent_by=sent_by)


def _record(ctx: WorkerContext, claim: Claim, state: RowStatus, *, message_id: str | None = None,
            error: str | None = None, status: int | None = None, retry_in: float = 0.0,
            sent_by: str | None = None) -> TokenEnd:
    recorded = ctx.ledger.complete(claim, state, message_id=message_id, error=error, status=status,
                                   retry_in=retry_in, sent_by=sent_by)
    log.debug("send %s part %s: %s (%s)", claim.key.contact, claim.key.part, state, recorded)
    return _ENDS[state]
