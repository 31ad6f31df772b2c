"""The job queue's (procrastinate's) logs as a worker shows them: its warnings and errors on one line
each, never a traceback (a worker riding out a database restart would print pages); with --debug, all
of it."""

from __future__ import annotations

import logging

import pytest

from audiopipe.cli.console import setup_logging


def _log_a_failure() -> None:
    try:
        raise ConnectionError("server closed the connection unexpectedly\n\tThis probably means ...")
    except ConnectionError:
        logging.getLogger("procrastinate.worker").error("Error while fetching a job", exc_info=True)
    logging.getLogger("procrastinate.worker").info("Job audiopipe.send[42] succeeded")


@pytest.fixture(autouse=True)
def _restore_logging():  # type: ignore[no-untyped-def]
    yield
    for name in ("audiopipe", "procrastinate"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def test_a_queue_error_is_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(verbose=0, debug=False)
    _log_a_failure()
    err = capsys.readouterr().err
    assert err.splitlines() == ["audiopipe: error: Error while fetching a job "
                                "(ConnectionError: server closed the connection unexpectedly)"]


def test_debug_shows_the_queue_in_full(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(verbose=0, debug=True)
    _log_a_failure()
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "This probably means" in err
    assert "Job audiopipe.send[42] succeeded" in err
