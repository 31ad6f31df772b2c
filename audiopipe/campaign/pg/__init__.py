"""Everything that talks to PostgreSQL: the ledger shared by many workers on many machines.

The embedded default stays SQLite (:class:`~audiopipe.campaign.ledger.SqliteLedger`, one process).
A campaign too big for one machine keeps its ledger here instead, and its sends are claimed by
workers anywhere; every promise stays: each message at most once, every definite outcome recorded,
unknown outcomes never resent without a person's word, one pace for all, a 401 stopping everything.

- :mod:`.connection`  which database (``AUDIOPIPE_DATABASE_URL``), a pool, riding out short outages;
- :mod:`.schema`      the versioned schema, migrated by audiopipe itself (:func:`migrate`), with
  :mod:`.migrations` (our steps) and :mod:`.queue_schema` (procrastinate's tables);
- :mod:`.ledger`      :class:`PgLedger`, the SQLite ledger's methods and the distributed ones, over
  :mod:`.plan` (recording a plan), :mod:`.reads` (what it knows), :mod:`.settle` (resolve by hand),
  :mod:`.records` (rows and events as SQL);
- :mod:`.claims`      claim a send, record its result fenced by the attempt;
- :mod:`.workers`     heartbeats, and the reaper of dead workers' sends;
- :mod:`.campaigns`   the stop flag a 401 raises for everyone;
- :mod:`.pace`        one rate for all workers, and the pause a 429 imposes on all;
- :mod:`.journal`     results kept on local disk while the database is away;
- :mod:`.jobs`        procrastinate jobs (send tokens, prepares) deferred in the caller's transaction.
"""

from __future__ import annotations

from audiopipe.campaign.pg.claims import Claim, Recorded, Result
from audiopipe.campaign.pg.connection import ENV_URL, database_url, describe
from audiopipe.campaign.pg.errors import AlreadyTaken, DatabaseUnavailable, NoDatabase, NotRegistered, SchemaError
from audiopipe.campaign.pg.ledger import PgLedger
from audiopipe.campaign.pg.schema import migrate, versions

__all__ = ["ENV_URL", "AlreadyTaken", "Claim", "DatabaseUnavailable", "NoDatabase", "NotRegistered", "PgLedger",
           "Recorded", "Result", "SchemaError", "database_url", "describe", "migrate", "versions"]
