"""The project's exceptions.

Every error a user can cause (bad YAML, an unknown key, a missing dataset, an unknown sweep id) is an
``IgniteSweepError`` whose message is one line naming what is wrong and what is allowed. ``cli.py`` is the
only place that turns it into an exit code.
"""

from __future__ import annotations


class IgniteSweepError(Exception):
    """Base class: a user-facing error with a one-line message."""


class ConfigError(IgniteSweepError):
    """A hyperparameter, sweep YAML key or CLI option has a bad name or value."""


class DataError(IgniteSweepError):
    """A dataset cannot be found, downloaded or built."""


class BackendError(IgniteSweepError):
    """A sweep store or the W&B service refused or cannot serve a request."""
