"""The SQL the SQLite ledger runs, and its rows read back by column name.

Most statements are fixed text. Those that are put together (a filter a caller chose, a column an
older ledger lacks) are made here only, from our own column names and clauses: every value a caller
gives is bound as a parameter, never written into the text.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from audiopipe.campaign.ledger.rows import BlockedPart, LedgerRow, SendKey
from audiopipe.campaign.ledger.schema import SEND_COLUMNS
from audiopipe.campaign.ledger.vocabulary import DEFERRED, FAILED, PENDING, SENDING, UNKNOWN, RowStatus

NO_LIMIT = -1  # SQLite's LIMIT for "all of them"

SELECT_ONE = ("SELECT * FROM sends "
              "WHERE campaign=? AND workspace=? AND contact=? AND source_sha256=? AND part=?")
SELECT_IN_STATE = "SELECT * FROM sends WHERE state=? ORDER BY rowid"

# The intent to send: a row becomes `sending`, one more attempt, the last result cleared.
BEGIN = ("INSERT INTO sends (campaign, workspace, contact, source_sha256, part, parts, file, prepared_sha256, "
         "state, attempts, created_at, updated_at, sent_by) VALUES (?,?,?,?,?,?,?,?,?,1,?,?,?) "
         "ON CONFLICT (campaign, workspace, contact, source_sha256, part) DO UPDATE SET "
         "state=excluded.state, parts=excluded.parts, file=excluded.file, sent_by=excluded.sent_by, "
         "prepared_sha256=excluded.prepared_sha256, message_id=NULL, error=NULL, status=NULL, "
         "resolved=NULL, attempts=sends.attempts+1, updated_at=excluded.updated_at")
# A result, by a run or by a person (who also leaves a `resolved` mark; a run's result has none).
SET_RESULT = ("UPDATE sends SET state=?, message_id=?, error=?, status=?, resolved=?, updated_at=? "
              "WHERE campaign=? AND workspace=? AND contact=? AND source_sha256=? AND part=?")
ADD_EVENT = ("INSERT INTO events (at, campaign, workspace, contact, source_sha256, part, state, detail) "
             "VALUES (?,?,?,?,?,?,?,?)")
COUNT_SENT_BY = ("SELECT campaign, sent_by, COUNT(*) AS n FROM sends WHERE sent_by IS NOT NULL "
                 "AND (? IS NULL OR campaign = ?) GROUP BY campaign, sent_by")
ADD_PLAN_EVENT = "INSERT INTO events (at, campaign, state, detail) VALUES (?,?,?,?)"

# A plan: new rows pending; an existing row takes the plan's file and hash only while still pending.
PLAN = ("INSERT INTO sends (campaign, workspace, contact, source_sha256, part, parts, file, "
        "prepared_sha256, state, attempts, created_at, updated_at, work) "
        "VALUES (?,?,?,?,?,?,?,?,?,0,?,?,?) "
        "ON CONFLICT (campaign, workspace, contact, source_sha256, part) DO UPDATE SET "
        "parts=excluded.parts, file=excluded.file, prepared_sha256=excluded.prepared_sha256, "
        "updated_at=excluded.updated_at, work=excluded.work WHERE sends.state=?")
# A pending row of this plan is stamped with the plan's time; one that is not is from an older plan.
DROP_STALE_PENDING = "DELETE FROM sends WHERE work=? AND campaign=? AND state=? AND updated_at<>?"
COUNT_PENDING = "SELECT COUNT(*) AS n FROM sends WHERE work=? AND campaign=? AND state=?"

COUNT_TRIED = "SELECT COUNT(*) AS n FROM sends WHERE campaign=? AND attempts>0"
COUNT_RECORDS = "SELECT COALESCE(MAX(rowid), 0) AS n FROM events"  # events are only ever added
CAMPAIGNS = "SELECT DISTINCT campaign FROM sends ORDER BY campaign"
PLAN_EVENTS = "SELECT at, detail FROM events WHERE state=? ORDER BY rowid DESC"

# Pending or deferred parts of a split recording that wait behind an earlier part which no run will
# send on its own: unknown, refused, or (unless a batch is running) left mid-request by a dead run.
# Behind a deferred part they are not blocked: the next run sends it, then them. `:sending` is bound
# to NULL while a batch runs (a NULL in IN matches nothing), `:campaign` to NULL for every campaign.
BLOCKED = (
    "WITH first_stuck AS (SELECT campaign, workspace, contact, source_sha256, MIN(part) AS part FROM sends "
    "WHERE parts>1 AND state IN (:unknown, :failed, :sending) AND (:campaign IS NULL OR campaign=:campaign) "
    "GROUP BY campaign, workspace, contact, source_sha256), "
    "blocked AS (SELECT s.rowid AS id, b.part AS by_part, (SELECT x.state FROM sends x WHERE "
    "x.campaign=b.campaign AND x.workspace=b.workspace AND x.contact=b.contact AND "
    "x.source_sha256=b.source_sha256 AND x.part=b.part) AS by_state "
    "FROM sends s JOIN first_stuck b ON s.campaign=b.campaign AND s.workspace=b.workspace "
    "AND s.contact=b.contact AND s.source_sha256=b.source_sha256 "
    "WHERE s.part>b.part AND s.state IN (:pending, :deferred)) "
    "SELECT s.*, blocked.by_part, blocked.by_state FROM sends s JOIN blocked ON s.rowid=blocked.id "
    "ORDER BY s.campaign, s.contact, s.file, s.part LIMIT :limit")


def blocked_args(campaign: str | None, running: bool, limit: int | None) -> dict[str, Any]:
    return {"unknown": UNKNOWN, "failed": FAILED, "sending": None if running else SENDING, "campaign": campaign,
            "pending": PENDING, "deferred": DEFERRED, "limit": NO_LIMIT if limit is None else limit}


def key_args(key: SendKey) -> tuple[str, str, str, str, int]:
    """A key's values in the order of the key's columns (as in SELECT_ONE and SET_RESULT)."""
    return (key.campaign, key.workspace, key.contact, key.source_sha256, key.part)


class Where:
    """The WHERE clause of a query on ``sends``: ``column=?`` and ``column IN (?, ...)`` terms on our
    own column names, every value bound; a term whose value is None is left out."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.args: list[Any] = []

    def equals(self, column: str, value: Any) -> Where:
        assert column in SEND_COLUMNS, column
        if value is not None:
            self.terms.append(f"{column}=?")
            self.args.append(value)
        return self

    def among(self, column: str, values: tuple[Any, ...] | None) -> Where:
        assert column in SEND_COLUMNS, column
        if values:
            self.terms.append(f"{column} IN ({','.join('?' * len(values))})")
            self.args.extend(values)
        return self

    def has(self, column: str) -> Where:
        assert column in SEND_COLUMNS, column
        self.terms.append(f"{column} IS NOT NULL")
        return self

    def __str__(self) -> str:
        return " AND ".join(self.terms) or "1=1"


ORDER_AS_PLANNED = "campaign, updated_at, contact, part"
ORDER_NEWEST_FIRST = "updated_at DESC"


def select_rows(where: Where, order: str, limit: int | None) -> tuple[str, list[Any]]:
    """Rows of ``sends`` in one of the orders above, at most ``limit`` of them."""
    assert order in (ORDER_AS_PLANNED, ORDER_NEWEST_FIRST), order
    sql = f"SELECT * FROM sends WHERE {where} ORDER BY {order} LIMIT ?"  # noqa: S608 - see Where: our own terms, values bound
    return sql, [*where.args, NO_LIMIT if limit is None else limit]


def count_states(where: Where, columns: set[str]) -> tuple[str, list[Any]]:
    """Per campaign and state: how many sends (``n``), and how many of them were settled by hand
    (``resolved``; none in a ledger from before that column)."""
    resolved = "SUM(resolved IS NOT NULL)" if "resolved" in columns else "0"
    sql = (f"SELECT campaign, state, COUNT(*) AS n, {resolved} AS resolved FROM sends "  # noqa: S608 - our own terms, values bound
           f"WHERE {where} GROUP BY campaign, state")
    return sql, where.args


def count_pending_by_work(where: Where) -> tuple[str, list[Any]]:
    """Per campaign and work (``work``): how many pending sends (``n``)."""
    sql = (f"SELECT campaign, work, COUNT(*) AS n FROM sends WHERE {where} "  # noqa: S608 - our own terms, values bound
           "GROUP BY campaign, work ORDER BY campaign")
    return sql, where.args


def row_from(r: sqlite3.Row) -> LedgerRow:
    """A row of ``sends`` (``SELECT *``), by column name; a column an older ledger lacks reads None."""
    names = r.keys()
    return LedgerRow(key=SendKey(r["campaign"], r["workspace"], r["contact"], r["source_sha256"], r["part"]),
                     state=RowStatus(r["state"]), parts=r["parts"], file=r["file"],
                     prepared_sha256=r["prepared_sha256"], message_id=r["message_id"], error=r["error"],
                     status=r["status"], attempts=r["attempts"], updated_at=r["updated_at"],
                     work=r["work"] if "work" in names else None,
                     resolved=json_object(r["resolved"]) if "resolved" in names else None,
                     sent_by=r["sent_by"] if "sent_by" in names else None)


def blocked_from(r: sqlite3.Row) -> BlockedPart:
    return BlockedPart(row_from(r), int(r["by_part"]), RowStatus(r["by_state"]))


def json_object(text: str | None) -> dict[str, Any] | None:
    """A JSON object stored in a column (a resolution mark, an event's detail); text that is not one
    is kept as its ``outcome``, so nothing a ledger holds is lost when read."""
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return {"outcome": str(text)}
    return found if isinstance(found, dict) else {"outcome": str(found)}
