"""A local stand-in for the Lancepilot API that checks uploads the way the real server does."""
