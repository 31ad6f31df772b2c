"""Moved to :mod:`audiopipe.cli.summary` (the closing lines are the command line's text): this name
stays importable until the layout change is merged."""

from audiopipe.cli.summary import (  # noqa: F401 - re-exported for callers not yet moved
    GROUP_LIMIT,
    PROBLEM_STATUSES,
    SAMPLE,
    Problem,
    ProblemGroup,
    batch_lines,
    failure_line,
    group_line,
    group_problems,
    held_back_lines,
    interrupted_after,
    ledger_problem,
    problem_groups_json,
    problem_lines,
    row_problem,
)
