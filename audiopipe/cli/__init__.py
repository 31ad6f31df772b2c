"""The command line: parses options, calls one library function per command, renders the outcome and
maps errors to exit codes. The only place that prints or exits."""

from audiopipe.cli.app import cli, main

__all__ = ["cli", "main"]
