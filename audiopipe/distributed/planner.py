"""The planner of a distributed campaign: from a folder and a contacts CSV to a plan in PostgreSQL.

It finds the sources and reads the contacts exactly as the embedded batch does (the same discovery,
the same CSV reading: a file cell always stays inside the folder, a link out of it is refused), skips
files still arriving (the next plan takes them), puts each unique source into the store (content-
addressed: a rerun copies nothing) and then, in ONE transaction, records the campaign with its
settings, the recipe, a target per (contact, source), a prepare per unique (source, recipe), a
prepare job for each prepare nobody is working on, and, for prepares already done (by an earlier
plan, another campaign), the ``sends`` rows and their send tokens (:mod:`audiopipe.campaign.pg.prepares`).
Workers anywhere then carry it out. The plan and its jobs commit together, or neither does.

A rerun of the same plan (a cron planner) is idempotent: targets, prepares and rows that exist are
left as they are (a sent row is never touched), a prepare job is deferred only when none is queued
and the prepare is not held by a live worker, and tokens only for rows that lack one: the rows made
now, and those that ran out of tries (planning again is the person's word that gives them one more).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from audiopipe.campaign import stages
from audiopipe.campaign.contacts import ContactList, read_contacts
from audiopipe.campaign.ledger.marker import WorkMarker
from audiopipe.campaign.pg import jobs, pace, prepares, recipes
from audiopipe.campaign.pg.campaigns import CampaignSettings, save_settings
from audiopipe.campaign.pg.connection import Connection
from audiopipe.campaign.pg.ledger import PgLedger
from audiopipe.campaign.pg.records import add_event
from audiopipe.campaign.planner import label_of
from audiopipe.campaign.settings import BatchSettings
from audiopipe.errors import os_reason
from audiopipe.store import Store, StoredFile


@dataclass(frozen=True)
class PlanSummary:
    """What a plan recorded, as the CLI prints it (``to_dict`` for ``--json``)."""

    campaign: str
    recipe: str
    store: str
    sources: int                 # unique sources (by content) with at least one target in this plan
    targets: int                 # (contact, source content) pairs in this plan
    new_targets: int             # of them, not in the ledger before (0 on a rerun)
    prepares_deferred: int       # prepares that needed a job (deferred now, or found queued already)
    sends_ready: int             # sends rows made now from prepares already done
    tokens_added: int            # send tokens deferred for rows that lacked one (out of tries: one more each)
    invalid: tuple[str, ...] = ()   # contacts rows that cannot be sent: "line N: reason"
    refused: tuple[str, ...] = ()   # sources refused on sight: "file: reason"
    waiting: tuple[str, ...] = ()   # files changed too recently: the next plan takes them

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Found:
    """The sources of a plan in the store, and what could not be planned."""

    stored: dict[Path, StoredFile]
    refused: dict[Path, str]
    waiting: list[Path]


def plan_campaign(ledger: PgLedger, store: Store, settings: BatchSettings, *,
                  store_spec: str | None = None) -> PlanSummary:
    """Plan ``settings.campaign`` (its folder, contacts, prepare settings, rate and attempts) into the
    database of ``ledger``, its sources into ``store``; ``store_spec``: how workers open that store
    (default: ``store.describe()``, a directory store's path). Library errors only (UsageError for a
    folder or CSV that cannot be used, StoreError, DatabaseUnavailable)."""
    folder = Path(settings.folder)
    contacts = read_contacts(settings.contacts, folder, default_workspace=settings.workspace)
    found = _put_sources(store, contacts, folder, settings.settle)
    targets = _targets(settings.campaign, contacts, folder, found.stored)
    used = {t.source_sha256 for t in targets}
    sources = {s.sha256: s.key for s in found.stored.values() if s.sha256 in used}
    spec = store_spec or store.describe()
    recipe = recipes.recipe_of(settings.prepare, spec)
    where = {"folder": str(folder.resolve()), "contacts": str(Path(settings.contacts).resolve()), "store": spec}
    work = WorkMarker(folder, settings.contacts, settings.campaign).work_id

    def record(conn: Connection) -> tuple[int, int, int, int]:
        with conn.transaction():
            save_settings(conn, settings.campaign, CampaignSettings(
                settings.rate or None, settings.attempts, spec, send_by=settings.send.send_by.value,
                url_ttl=settings.send.url_ttl, public_url=settings.send.public_url))
            pace.set_rate(conn, settings.campaign, settings.rate)
            recipes.save_recipe(conn, recipe)
            new = prepares.record_targets(conn, recipe.id, targets, work=work)
            prepares.record_prepares(conn, recipe.id, sources)
            prepares.lock_prepares(conn, settings.campaign, sources)  # a prepare ending now sees these targets
            deferred = prepares.defer_unstarted(conn, settings.campaign, sources, lease=ledger.lease)
            made = sum(prepares.expand_ready(conn, settings.campaign).values())
            # sends that ran out of tries wait for a person: planning again is that word (one more try each)
            topped = jobs.top_up(conn, settings.campaign, exhausted_too=True)
            add_event(conn, None, "planned", dict(where, work=work, targets=len(targets), new_targets=new,
                                                  sources=len(sources), recipe=recipe.id),
                      campaign=settings.campaign)
        return new, deferred, made, topped

    new, deferred, made, topped = ledger.db.run(record, doing="record the plan")
    return PlanSummary(settings.campaign, recipe.id, spec, len(sources), len(targets), new, deferred, made, topped,
                       invalid=tuple(f"line {r.line}: {r.reason}" for r in contacts.invalid),
                       refused=tuple(f"{_shown(p, folder)}: {why}" for p, why in found.refused.items()),
                       waiting=tuple(_shown(p, folder) for p in found.waiting))


def _put_sources(store: Store, contacts: ContactList, folder: Path, settle: float) -> _Found:
    """Every source the contacts ask for, found as the embedded batch finds them, put into ``store``;
    a file that cannot be read is refused (it alone), one still arriving waits for the next plan."""
    items, refused_on_sight = stages.find_sources(contacts, folder)
    items, waiting = stages.settle(items, settle)
    refused = {p: _reason(o.error) for p, o in refused_on_sight.items()}
    stored: dict[Path, StoredFile] = {}
    for item in items:
        try:
            with open(item.path, "rb"):
                pass  # readable: a failure to put it from here on is the store's, and stops the plan
        except OSError as exc:
            refused[item.path] = os_reason(exc)
            continue
        stored[item.path] = store.put(item.path, suffix=_suffix(item.path))
    return _Found(stored, refused, sorted(waiting))


def _targets(campaign: str, contacts: ContactList, folder: Path,
             stored: dict[Path, StoredFile]) -> list[prepares.Target]:
    """A target per (contact, source content) the CSV asks for (its file, or every source: a
    broadcast); two files of the same content to one contact are one target, labelled by the first."""
    everything = sorted(stored)
    found: dict[tuple[str, str, str], prepares.Target] = {}
    for row in contacts.rows:
        for f in [row.file] if row.file is not None else everything:
            if f is None or f not in stored:
                continue  # refused or still arriving: no target yet
            target = prepares.Target(campaign, row.workspace, row.contact, stored[f].sha256, label_of(row, f, folder))
            key = (target.workspace, target.contact, target.source_sha256)
            if key not in found or target.file < found[key].file:
                found[key] = target
    return list(found.values())


def _suffix(path: Path) -> str:
    """The source's extension as the store keeps it (the preparation reads it as a hint), if plain."""
    suffix = path.suffix.lower()
    return suffix if suffix[1:].isascii() and suffix[1:].isalnum() and len(suffix) <= 17 else ""


def _reason(error: Exception | None) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error or "refused")


def _shown(path: Path, folder: Path) -> str:
    root = folder.resolve()
    return str(path.relative_to(root)) if root in path.parents else str(path)
