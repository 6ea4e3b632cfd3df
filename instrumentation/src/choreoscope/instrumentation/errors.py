"""Choreoscope's exceptions: one root, each also the matching built-in."""

from __future__ import annotations


class ChoreoscopeError(Exception):
    """Root of every exception Choreoscope raises on its own account."""


class UsageError(ChoreoscopeError, TypeError):
    """The API was called with the wrong kind of argument, or a decorated function returned one.

    The message reads "expected X, got Y".
    """
