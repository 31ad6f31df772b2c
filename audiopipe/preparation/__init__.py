"""Stage 1: probe an input, decide whether it can go as it is, otherwise plan, encode and verify a file
the API accepts. Nothing here knows about contacts, ledgers or HTTP."""
