"""The commands, one module per group: ``prepare`` (probe, prepare), ``send``, ``batch``, ``status``
(status, resolve) and ``setup`` (doctor, cache, sandbox). Each is thin: it parses, makes one library
call (or a few), renders the outcome and picks the exit code; :mod:`audiopipe.cli.main` puts them in
the ``audiopipe`` group."""
