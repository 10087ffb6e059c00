"""Numbers for people: how a metric, a parameter or a run time reads in a table, a log line or the live view.

Shared by the backends (log lines), the pool's live view and the report's tables, so that recording a run does not
depend on how runs are shown.
"""

from __future__ import annotations

from typing import Any


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def fmt_runtime(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"
