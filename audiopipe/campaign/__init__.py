"""Stage 3: folders against a contacts list: plan every send in a durable ledger, send each at most
once, report what happened."""
