"""The token checked before the expensive work (``send`` before converting a file, ``batch`` before
preparing a folder), so a wrong token is exit 3 in seconds, not after every file was prepared."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from audiopipe.cli.signals import stage
from audiopipe.errors import RefusedError

if TYPE_CHECKING:
    from audiopipe.send.client import LancepilotClient

log = logging.getLogger(__name__)


def check_token(client: LancepilotClient, workspace: str, contact: str, *, refuse_not_found: bool = False) -> None:
    """One request that cannot create a message (:meth:`LancepilotClient.check_token`): a 401 stops the
    command (exit 3); no verdict (429, no answer) lets it go on. ``refuse_not_found``: a 404 (no such
    workspace or contact) stops it too, before the file is prepared for nothing."""
    with stage("checking the token", "nothing was prepared or sent"):
        result = client.check_token(workspace, contact).require()
        log.info("token checked with one request that cannot create a message: %s (%.0f ms)",
                 result.detail, result.seconds * 1000)
        if refuse_not_found and result.status == 404:
            raise RefusedError(result.detail.replace("could not check the token: ", "")
                               + "; found out before preparing the file", status=404)
