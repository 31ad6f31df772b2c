"""How a send's row is read from and written to PostgreSQL: the columns a :class:`LedgerRow` is made
of, the key of a send as SQL, and events (the history every change leaves).

Times are the database's clock (``now()``): every worker, wherever it runs, then reads one clock, and
a row's ``updated_at`` is handed out as seconds since the epoch, as the SQLite ledger does.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from audiopipe.campaign.ledger import LedgerRow, RowStatus, SendKey
from audiopipe.campaign.pg.connection import Connection

KEY_COLUMNS = ("campaign", "workspace", "contact", "source_sha256", "part")
KEY_WHERE = "campaign = %s AND workspace = %s AND contact = %s AND source_sha256 = %s AND part = %s"
_PLAIN = ("campaign", "workspace", "contact", "source_sha256", "part", "parts", "file", "prepared_sha256", "state",
          "message_id", "error", "status", "attempts", "work", "resolved", "sent_by", "stored")


def row_select(alias: str = "") -> str:
    """The columns a LedgerRow is made of (see to_row), from table ``alias`` when given (for joins)."""
    p = f"{alias}." if alias else ""
    return ", ".join(f"{p}{c}" for c in _PLAIN) + f", extract(epoch FROM {p}updated_at)::float8 AS updated_at"


ROW_SELECT = row_select()


def query(template: str, **fragments: str | sql.Composable) -> sql.Composed:
    """``template`` with each ``{name}`` replaced by one of our own SQL fragments (a column list, a
    condition), never by a value: values are always bound as parameters (``%s``)."""
    return sql.SQL(template).format(**{k: sql.SQL(v) if isinstance(v, str) else v for k, v in fragments.items()})


def key_args(key: SendKey) -> tuple[str, str, str, str, int]:
    return key.campaign, key.workspace, key.contact, key.source_sha256, key.part


def to_row(r: dict[str, Any]) -> LedgerRow:
    """A row read with ROW_SELECT (by a dict_row cursor) as the LedgerRow every ledger hands out."""
    return LedgerRow(key=SendKey(r["campaign"], r["workspace"], r["contact"], r["source_sha256"], r["part"]),
                     state=RowStatus(r["state"]), parts=r["parts"], file=r["file"],
                     prepared_sha256=r["prepared_sha256"], message_id=r["message_id"], error=r["error"],
                     status=r["status"], attempts=r["attempts"],
                     updated_at=float(r["updated_at"]), work=r["work"], resolved=r["resolved"], sent_by=r["sent_by"],
                     stored=r["stored"])


def add_event(conn: Connection, key: SendKey | None, state: str, detail: Any = None, *,
              campaign: str | None = None) -> None:
    """One line of history: a send changing state (with its key), or a record about a whole plan."""
    parts = key_args(key) if key is not None else (campaign, None, None, None, None)
    conn.execute("INSERT INTO events (campaign, workspace, contact, source_sha256, part, state, detail) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s)", (*parts, state, Jsonb(detail) if detail is not None else None))
