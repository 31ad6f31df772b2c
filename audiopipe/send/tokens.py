"""Where the API token comes from, and the shapes of it that could never work.

The token is looked for in one order (an argument, a token file named explicitly, ``LANCEPILOT_TOKEN``,
``LANCEPILOT_TOKEN_FILE``) and refused here, before anything is prepared or sent, when it could
never go in a header: non-ASCII or invisible characters, a whole ``Authorization:`` line, the bare
word ``Bearer``. A token file is read bounded, so a device or a pipe named by mistake cannot hang a run.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from audiopipe.errors import UsageError, setting
from audiopipe.files import NOT_REGULAR, SmallFileError, read_small_file

log = logging.getLogger(__name__)

TOKEN_FILE_LIMIT = 4096  # bytes; API tokens are far shorter, so more means the wrong file
# What people paste along with the token: the scheme of the header it goes in ("Bearer abc").
_BEARER_PREFIX = re.compile(r"bearer(\s+|$)", re.IGNORECASE)
_HEADER_NAME = re.compile(r"authorization\s*:", re.IGNORECASE)


def load_token(token: str | None = None, token_file: str | Path | None = None) -> tuple[str, str]:
    """The token and where it came from: the argument, then a token file given here, then
    ``LANCEPILOT_TOKEN``, then ``LANCEPILOT_TOKEN_FILE``. A token file named explicitly wins over
    the environment, so a stale exported token cannot shadow it."""
    token, source = token_setting(token, token_file)
    token = _without_bearer(token, source)
    # An HTTP header carries printable ASCII only; a pasted zero-width space or emoji would fail
    # mid-request. Refuse it here, before anything is recorded or sent.
    if not all(33 <= ord(c) < 127 for c in token):
        raise UsageError(f"{source} holds characters a token cannot have (spaces, accents, invisible "
                         "or non-ASCII characters); copy it again", field="token")
    return token, source


def token_setting(token: str | None = None, token_file: str | Path | None = None) -> tuple[str, str]:
    """The token as it was set (spaces around it removed, nothing else) and where it came from;
    :class:`UsageError` when there is none. :func:`load_token` is what a request uses."""
    source = "the token given"
    if not token and token_file:
        path, source = token_file, f"the token file {token_file}"
    elif not token and os.environ.get("LANCEPILOT_TOKEN"):
        token, source, path = os.environ["LANCEPILOT_TOKEN"], "LANCEPILOT_TOKEN", None
    elif not token and os.environ.get("LANCEPILOT_TOKEN_FILE"):
        path = os.environ["LANCEPILOT_TOKEN_FILE"]
        source = f"the token file {path} (LANCEPILOT_TOKEN_FILE)"
    else:
        path = None
    if path and not token:
        token = _read_token_file(path, source)
        if not token:
            raise UsageError(f"{source} is empty: put the API token in it", field="token_file")
    token = (token or "").strip()
    if not token:
        raise UsageError(f"no API token: set LANCEPILOT_TOKEN, or give {setting('token_file')} / "
                         "LANCEPILOT_TOKEN_FILE", field="token")
    return token, source


def _without_bearer(token: str, source: str) -> str:
    """The token without the ``Bearer `` a copy of the whole header value brings along (any case,
    any spaces): audiopipe writes that word itself, and "Bearer Bearer abc" is refused as 401."""
    if _HEADER_NAME.match(token):
        raise UsageError(f"{source} holds a whole 'Authorization:' header; keep only the token that "
                         "follows 'Authorization: Bearer '", field="token")
    prefix = _BEARER_PREFIX.match(token)
    if prefix is None:
        return token
    log.debug("%s begins with 'Bearer ': using the token that follows it", source)
    rest = token[prefix.end():].strip()
    if not rest:
        raise UsageError(f"{source} holds only the word 'Bearer': put the API token itself there", field="token")
    return rest


def _read_token_file(path: str | Path, source: str) -> str:
    """A token file read bounded: a device (/dev/zero), a pipe or a folder named by mistake must
    neither exhaust memory nor wait forever for a writer, so only a small regular file is read."""
    try:
        data = read_small_file(path, TOKEN_FILE_LIMIT)
    except SmallFileError as exc:
        if str(exc) == NOT_REGULAR:
            raise UsageError(f"{source} is {NOT_REGULAR}: give the file that holds the token",
                               field="token_file") from None
        if str(exc).startswith("larger than"):
            raise UsageError(f"{source} is {exc}, far too large for a token: is it the right file?",
                               field="token_file") from None
        raise UsageError(f"cannot read {source}: {exc}", field="token_file") from None
    return data.decode("utf-8", errors="replace").strip()
