"""The top-level package is the everyday API (as requests' is): every name it promises resolves, the
sending half is there too, and preparing alone does not pull in the HTTP client."""

from __future__ import annotations

import subprocess
import sys

import audiopipe


def test_every_promised_name_resolves():
    missing = [name for name in audiopipe.__all__ if getattr(audiopipe, name, None) is None]
    assert missing == []


def test_the_sending_half_is_the_real_thing():
    from audiopipe.campaign.batch import run_batch
    from audiopipe.campaign.ledger import SqliteLedger
    from audiopipe.send.client import LancepilotClient

    assert audiopipe.run_batch is run_batch
    assert audiopipe.LancepilotClient is LancepilotClient
    assert audiopipe.SqliteLedger is SqliteLedger
    assert issubclass(audiopipe.OutcomeUnknown, audiopipe.SendError)


def test_stage_modules_are_modules_and_the_everyday_names_are_functions():
    import audiopipe.preparation.pipeline
    import audiopipe.preparation.probe

    assert callable(audiopipe.probe) and callable(audiopipe.prepare)
    assert type(audiopipe.preparation.probe).__name__ == "module"


def test_preparing_alone_does_not_import_the_http_client():
    code = "import sys, audiopipe; print('requests' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_an_unknown_name_is_an_attribute_error():
    try:
        audiopipe.no_such_thing  # noqa: B018 - the lookup is the test
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("no AttributeError")
