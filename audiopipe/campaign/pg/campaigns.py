"""The stop flag of a campaign: raised once, seen by every worker's next claim.

A 401 means the token was refused: every request of the campaign would be refused the same way, from
every worker. So the worker that meets it stops the campaign in the database, and no worker claims a
send of it again until a person resumes it (with a token that works). Sends already claimed when the
flag goes up may still go out; that is the only delay.
"""

from __future__ import annotations

from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.records import add_event


def stop(conn: Connection, campaign: str, why: str) -> bool:
    """Stop ``campaign`` everywhere; False when it was already stopped (the first reason is kept)."""
    with conn.transaction():
        done = conn.execute(
            "INSERT INTO campaigns AS c (campaign, stopped_at, stopped_why) VALUES (%s, now(), %s) "
            "ON CONFLICT (campaign) DO UPDATE SET stopped_at = now(), stopped_why = excluded.stopped_why "
            "WHERE c.stopped_at IS NULL", (campaign, why)).rowcount == 1
        if done:
            add_event(conn, None, "stopped", {"why": why}, campaign=campaign)
    return done


def resume(conn: Connection, campaign: str, by: str) -> bool:
    """Let workers claim sends of ``campaign`` again; False when it was not stopped."""
    with conn.transaction():
        done = conn.execute("UPDATE campaigns SET stopped_at = NULL, stopped_why = NULL "
                            "WHERE campaign = %s AND stopped_at IS NOT NULL", (campaign,)).rowcount == 1
        if done:
            add_event(conn, None, "resumed", {"by": by}, campaign=campaign)
    return done


def stopped(conn: Connection, campaign: str) -> str | None:
    """Why ``campaign`` is stopped, or None when it is not."""
    row = conn.execute("SELECT stopped_why FROM campaigns WHERE campaign = %s AND stopped_at IS NOT NULL",
                       (campaign,)).fetchone()
    return None if row is None else str(row[0] or "stopped")
