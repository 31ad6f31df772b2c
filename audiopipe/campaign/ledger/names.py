"""Campaign names: one campaign for names that look alike, so "already sent" cannot be dodged by a
fullwidth letter, a doubled space or a different case."""

from __future__ import annotations

import unicodedata

from audiopipe.errors import UsageError


def campaign_name(raw: str) -> str:
    """The campaign a name means: NFKC (fullwidth letters, a no-break space become the plain ones),
    spaces trimmed and runs of them made one, so names that look alike are one campaign and one
    "already sent". A name with invisible or control characters (a zero-width space, a tab...)
    would look like another and resend it: refused. Case is kept: see check_campaign_case."""
    name = " ".join(part for part in unicodedata.normalize("NFKC", raw).split(" ") if part)
    hidden = [c for c in name if unicodedata.category(c)[0] in "CZ" and c != " "]
    if hidden:
        raise UsageError(f"--campaign {raw!r} holds an invisible or control character "
                         f"(U+{ord(hidden[0]):04X}): it would look like another campaign; type the name again")
    if not name:
        raise UsageError("--campaign must not be empty")
    return name


def check_campaign_case(campaign: str, known: list[str]) -> None:
    """Refuse a campaign that differs from one already in the ledger only in case (or in what
    campaign_name normalises, for names recorded before it did): it looks the same in any report,
    and would send everything again. Keys stay case-sensitive, so ledgers keep what they recorded."""
    for other in known:
        if other != campaign and " ".join(unicodedata.normalize("NFKC", other).split()).casefold() == \
                campaign.casefold():
            raise UsageError(f"the ledger already has a campaign {other!r}, which differs from {campaign!r} only "
                             f"in case or spacing: it would be sent again; use --campaign {other!r}, or a "
                             "clearly different name for a new campaign")
