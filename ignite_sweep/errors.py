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


def report_unexpected(exc: BaseException) -> str:
    """The backstop for bugs: write the full traceback to a log file under the store directory
    ($IGNITE_SWEEP_DIR, default ./.ignite-sweep; the temp dir if that cannot be written) and return the
    one line to print instead: ``error: <type>: <message> (traceback: <file>)``."""
    import os
    import tempfile
    import time
    import traceback
    from pathlib import Path

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    where = "not written"
    for folder in (Path(os.environ.get("IGNITE_SWEEP_DIR", ".ignite-sweep")).expanduser() / "logs",
                   Path(tempfile.gettempdir())):  # fmt: skip
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        except OSError:
            continue
        where = str(folder / name)
        break
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"error: {type(exc).__name__}: {message} (traceback: {where})"
