"""The command line: parses options, calls the library, renders the outcome and maps errors to exit
codes. The only place that prints or exits.

``main`` (the group and the program), ``exits`` (the exit codes), ``failures`` (how an error ends a
command), ``flags`` (the library's setting names as flags), ``options`` (shared options, and the one
place options become settings), ``signals`` (Ctrl-C and SIGTERM), ``ledger`` (the --state ledger),
``preflight`` (the token check), ``commands/`` (one module per command group); the text:
``render`` (audio files), ``summary`` (a batch's end), ``status_lines``, ``console`` and ``bars``;
``doctor`` (the set-up checks) and ``demo`` (``make demo``).
"""

from audiopipe.cli.main import cli, main

__all__ = ["cli", "main"]
