"""Where audiopipe keeps things of its own in the user's home: one place for the XDG lookups.

Each ``AUDIOPIPE_*`` variable wins over the XDG one, which wins over the XDG default; a folder is never
created here, only named.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "audiopipe"


def _xdg(variable: str, default: tuple[str, ...]) -> Path | None:
    configured = os.environ.get(variable)
    if configured:
        return Path(configured).expanduser()
    try:
        return Path.home().joinpath(*default)
    except (KeyError, RuntimeError):  # no HOME and no passwd entry: there is no such place
        return None


def _required(variable: str, default: tuple[str, ...]) -> Path:
    base = _xdg(variable, default)
    if base is None:
        raise RuntimeError(f"cannot find a home folder: set HOME or {variable}")
    return base / APP


def state_dir() -> Path:
    """``$XDG_STATE_HOME/audiopipe`` (``~/.local/state/audiopipe``): the default ledger, the sandbox."""
    return _required("XDG_STATE_HOME", (".local", "state"))


def cache_dir() -> Path:
    """``$AUDIOPIPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/audiopipe`` (``~/.cache/audiopipe``)."""
    configured = os.environ.get("AUDIOPIPE_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return _required("XDG_CACHE_HOME", (".cache",))


def data_dir() -> Path | None:
    """``$XDG_DATA_HOME/audiopipe`` (``~/.local/share/audiopipe``), or None when there is no home."""
    base = _xdg("XDG_DATA_HOME", (".local", "share"))
    return None if base is None else base / APP


def default_ledger() -> Path:
    """``$AUDIOPIPE_STATE``, else ``ledger.sqlite3`` in :func:`state_dir`."""
    configured = os.environ.get("AUDIOPIPE_STATE")
    if configured:
        return Path(configured).expanduser()
    return state_dir() / "ledger.sqlite3"


def default_sandbox_dir() -> Path:
    """Where ``audiopipe sandbox`` keeps what it received, unless told otherwise."""
    return state_dir() / "sandbox"
