"""What a batch is asked to do: :class:`BatchSettings` (the whole run, as the CLI's flags give it) and
:class:`SendRules` (the part of it a sender needs, so a sender elsewhere can be given only that)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from audiopipe.campaign.ledger import campaign_name
from audiopipe.errors import UsageError
from audiopipe.preparation.pipeline import PrepareSettings
from audiopipe.send.by_url import SendMode


@dataclass(frozen=True)
class SendRules:
    """How a sender treats the ledger's rows and its retries."""

    campaign: str
    attempts: int = 5             # tries per message within a run, for definite not-sent outcomes
    retry_unknown: bool = False   # resend rows whose outcome is unknown (a person said so)
    retry_failed: bool = False    # resend rows the server refused (e.g. a contact added since)


@dataclass(frozen=True)
class BatchSettings:
    folder: Path
    contacts: Path
    workspace: str | None = None
    campaign: str = "default"
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    jobs: int = 1                 # files prepared in parallel
    concurrency: int = 4          # sends in flight at once
    rate: float = 10.0            # messages per second across all workers (0: no limit)
    attempts: int = 5             # tries per message within a run, for definite not-sent outcomes
    dry_run: bool = False
    retry_unknown: bool = False
    retry_failed: bool = False    # resend rows the server refused (e.g. a contact added since)
    settle: float = 10.0          # a file changed less than this many seconds ago may still be arriving
    new_ledger: bool = False      # start afresh although another ledger recorded this work before
    send: SendMode = field(default_factory=SendMode)  # upload, or each prepared part's URL in the store
    store: str | None = None      # by URL: the store each prepared part is put into once (a spec: see open_store)

    def __post_init__(self) -> None:
        object.__setattr__(self, "campaign", campaign_name(self.campaign))  # frozen: set once, here
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if self.rate < 0:
            raise UsageError("--rate must be 0 (no limit) or more")

    @property
    def rules(self) -> SendRules:
        return SendRules(self.campaign, self.attempts, self.retry_unknown, self.retry_failed)
