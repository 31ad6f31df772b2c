"""The old single module of the command line, now :mod:`audiopipe.cli.main` and the modules beside it:
this name stays importable until the layout change is merged."""

from audiopipe.cli.main import cli, main

__all__ = ["cli", "main"]
