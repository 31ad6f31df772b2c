"""The distributed campaign, above :mod:`audiopipe.campaign.pg`: a planner, prepare jobs and send tokens
carried out by procrastinate workers on any number of machines, sharing one PostgreSQL ledger and one
store of prepared files."""
