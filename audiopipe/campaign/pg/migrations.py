"""audiopipe's own schema, as numbered steps: each step's SQL runs once per database, in order, inside
:func:`audiopipe.campaign.pg.schema.migrate`'s transaction. A step, once released, is never edited: a change is
a new step at the end (a database remembers which steps it has, not what they said).

The tables, and why each exists:

- ``sends``: the ledger, one row per (campaign, workspace, contact, source content hash, part) as in
  the SQLite ledger, with the same states and meanings, plus what many workers need: ``owner`` (the
  worker that claimed it), ``claim`` (which claim: see :mod:`audiopipe.campaign.pg.claims`), ``next_at`` (not
  before: a deferred send's back-off, and ``infinity`` for a part waiting for the one before it);
  ``attempts`` is also the fencing token a result must carry.
- ``events``: every change, never updated nor deleted (its growing id is the ledger's record count).
- ``campaigns``: one row per campaign, with the stop flag a 401 raises for every worker.
- ``workers``: who is working, and when each last gave a sign of life (the reaper reads it).
- ``rate_limits``: one row per pace shared by all workers (GCRA: the next free slot, and a pause).
- ``ledger_meta``: the ledger's random id, so a batch can tell this ledger from another one.

Step 2 (distributed campaigns): ``campaigns.settings`` holds what every worker of a campaign must agree
on (its pace, its tries per send, the store its files are in: see
:class:`audiopipe.campaign.pg.campaigns.CampaignSettings`; never a secret), and ``sends.stored`` names
the prepared part in that store, so a worker on any machine can fetch it.

Step 3 (preparing once, whichever worker does it): ``recipes`` (how to prepare, and into which store:
the id is the SHA-256 of that, as canonical JSON), ``prepares`` (one row per unique source and recipe:
its state, the worker preparing it, its parts once ready, its reason once failed) and ``targets`` (who
gets which source, before it is prepared: a ready prepare expands its targets into ``sends`` rows).
See :mod:`audiopipe.campaign.pg.prepares`.

Step 4 (sending by URL): ``sends.sent_by`` says how the last request of a send gave the API its file,
``upload`` or ``url`` (NULL: no request yet, or a row from before). With ``url`` the file is the one
``stored`` names; its URL itself, a credential while it lasts, is never kept.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    version: int
    about: str
    sql: str


LEDGER = """
CREATE TABLE ledger_meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO ledger_meta VALUES ('ledger_id', replace(gen_random_uuid()::text, '-', '')),
                               ('created_at', now()::text);

CREATE TABLE campaigns (
    campaign    text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz,
    stopped_why text
);

CREATE TABLE sends (
    campaign        text NOT NULL,
    workspace       text NOT NULL,
    contact         text NOT NULL,
    source_sha256   text NOT NULL,
    part            integer NOT NULL CHECK (part >= 1),
    parts           integer NOT NULL CHECK (parts >= part),
    file            text NOT NULL,
    prepared_sha256 text,
    state           text NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'deferred', 'unknown')),
    message_id      text,
    error           text,
    status          integer,
    attempts        integer NOT NULL DEFAULT 0,
    owner           text,
    claim           uuid,
    next_at         timestamptz NOT NULL DEFAULT '-infinity',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    work            text,
    resolved        jsonb,
    PRIMARY KEY (campaign, workspace, contact, source_sha256, part)
);
-- what a claim scans: only sends that may go, soonest first
CREATE INDEX sends_ready ON sends (next_at) WHERE state IN ('pending', 'deferred');
-- what the reaper and a claim's way back look up
CREATE INDEX sends_in_flight ON sends (owner, claim) WHERE state = 'sending';
CREATE INDEX sends_campaign_state ON sends (campaign, state);
CREATE INDEX sends_work ON sends (work, campaign) WHERE state = 'pending';

-- Part k of a split recording may go once part k-1 is sent. A claim checks that itself; this trigger
-- only moves part k from 'infinity' to now, so that claims never scan the parts still waiting.
CREATE FUNCTION audiopipe_release_next_part() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sends SET next_at = now()
     WHERE campaign = NEW.campaign AND workspace = NEW.workspace AND contact = NEW.contact
       AND source_sha256 = NEW.source_sha256 AND part = NEW.part + 1 AND next_at = 'infinity';
    RETURN NULL;
END;
$$;
CREATE TRIGGER sends_release_next_part AFTER UPDATE OF state ON sends FOR EACH ROW
    WHEN (NEW.state = 'sent' AND OLD.state IS DISTINCT FROM 'sent' AND NEW.part < NEW.parts)
    EXECUTE FUNCTION audiopipe_release_next_part();

CREATE TABLE events (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    campaign      text,
    workspace     text,
    contact       text,
    source_sha256 text,
    part          integer,
    state         text NOT NULL,
    detail        jsonb
);
CREATE INDEX events_planned ON events ((detail->>'work'), id) WHERE state = 'planned';

CREATE TABLE workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz
);

CREATE TABLE rate_limits (
    name         text PRIMARY KEY,
    interval_s   double precision NOT NULL CHECK (interval_s >= 0),
    tat          timestamptz NOT NULL DEFAULT '-infinity',
    paused_until timestamptz NOT NULL DEFAULT '-infinity',
    pauses       bigint NOT NULL DEFAULT 0
);
"""

DISTRIBUTED = """
ALTER TABLE campaigns ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';
ALTER TABLE sends ADD COLUMN stored text;
"""

PREPARES = """
CREATE TABLE recipes (
    recipe     text PRIMARY KEY,
    settings   jsonb NOT NULL,
    store      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE prepares (
    source_sha256 text NOT NULL,
    recipe        text NOT NULL REFERENCES recipes (recipe),
    source_key    text NOT NULL,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'preparing', 'ready', 'failed')),
    owner         text,
    claim         uuid,
    attempts      integer NOT NULL DEFAULT 0,
    parts         jsonb,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_sha256, recipe)
);
-- what the reaper (stalled prepares) and a worker's "work left?" look up
CREATE INDEX prepares_unfinished ON prepares (state, owner) WHERE state IN ('pending', 'preparing');

CREATE TABLE targets (
    campaign      text NOT NULL REFERENCES campaigns (campaign),
    workspace     text NOT NULL,
    contact       text NOT NULL,
    source_sha256 text NOT NULL,
    recipe        text NOT NULL REFERENCES recipes (recipe),
    file          text NOT NULL,
    work          text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign, workspace, contact, source_sha256)
);
-- what a finished prepare expands: every target of its (source, recipe)
CREATE INDEX targets_prepare ON targets (source_sha256, recipe, campaign);
"""

# A claim of a campaign's next send walks this in next_at order and stops at the first row it can lock;
# without it PostgreSQL took every ready row of the campaign through (campaign, state) and sorted them
# all to keep one (O(n) a claim: see tests/campaign/pg/test_pg_claim_cost.py).
READY_IN_CAMPAIGN = """
CREATE INDEX sends_ready_in_campaign ON sends (campaign, next_at) WHERE state IN ('pending', 'deferred');
"""

SENT_BY = """
ALTER TABLE sends ADD COLUMN sent_by text CHECK (sent_by IN ('upload', 'url'));
"""

STEPS: tuple[Step, ...] = (
    Step(1, "the ledger: sends, events, campaigns, workers, rate limits", LEDGER),
    Step(2, "distributed campaigns: campaign settings, the store key of each send", DISTRIBUTED),
    Step(3, "preparing once: recipes, prepares, targets", PREPARES),
    Step(4, "claiming a campaign's next send in a few page reads: its ready sends by next_at", READY_IN_CAMPAIGN),
    Step(5, "sending by URL: how each send gave the API its file", SENT_BY),
)
