"""Recipes: how a source is prepared, and into which store its parts go.

A recipe is the :class:`~audiopipe.preparation.settings.PrepareSettings` that decide the output (not
where a cache lives: workers prepare without one) and the store spec the parts are put into (every
target of a prepare must find its parts in its campaign's store). Its id is the SHA-256 of both as
canonical JSON, so a plan and its rerun, or two campaigns asking the same, name the same recipe and
share one prepare per source (:mod:`audiopipe.campaign.pg.prepares`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from audiopipe.campaign.pg.connection import Connection
from audiopipe.preparation.settings import PrepareSettings


@dataclass(frozen=True)
class Recipe:
    """How to prepare and where the parts go; ``id`` names both (see :func:`recipe_of`)."""

    id: str
    settings: PrepareSettings
    store: str


def recipe_of(settings: PrepareSettings, store: str) -> Recipe:
    """The recipe of ``settings`` (only what decides the output: not the cache) into ``store``."""
    canonical = json.dumps({"settings": settings.cache_fields(), "store": store}, sort_keys=True,
                           separators=(",", ":"))
    return Recipe(hashlib.sha256(canonical.encode()).hexdigest(), settings, store)


def save_recipe(conn: Connection, recipe: Recipe) -> None:
    conn.execute("INSERT INTO recipes (recipe, settings, store) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                 (recipe.id, Jsonb(recipe.settings.cache_fields()), recipe.store))


def load_recipe(conn: Connection, recipe_id: str) -> Recipe | None:
    row = conn.execute("SELECT settings, store FROM recipes WHERE recipe = %s", (recipe_id,)).fetchone()
    if row is None:
        return None
    return Recipe(recipe_id, PrepareSettings(**row[0], cache=False), str(row[1]))
