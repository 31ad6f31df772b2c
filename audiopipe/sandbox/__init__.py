"""A local stand-in for the Lancepilot API that checks uploads the way the real server does.

:class:`~audiopipe.sandbox.app.Sandbox` is the whole of it; the module docstring of
:mod:`audiopipe.sandbox.app` says which module owns which part.
"""
