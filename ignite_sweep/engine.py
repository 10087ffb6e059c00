"""W&B's open-source sweep engine (``sweeps``) as pure functions over run rows.

``next_params`` asks the engine for the next config, ``runs_to_stop`` for hyperband's stops. What comes back
is plain Python (int, float, str, bool, lists and dicts of them): the engine hands out numpy scalars
(``int64`` from ``q_uniform`` with an integer ``q``, ``bool_``...), which JSON, SQLite and wandb refuse.
No I/O here: the local backend stores and fetches, this module only decides.
"""

from __future__ import annotations

import warnings
from typing import Any

SWEEP_TO_ENGINE_STATE = {
    "running": "running",
    "finished": "finished",
    "stopped": "finished",  # stopped early with real metrics, as W&B records a hyperband stop
    "failed": "failed",
    "crashed": "crashed",
}


def sweeps_engine() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the engine's pydantic v1-style config warns on import
        import sweeps

    return sweeps


def plain(value: Any) -> Any:
    """numpy scalars and arrays (at any depth) -> the Python values they hold."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if type(value).__module__ == "numpy":
        return plain(value.tolist())  # a numpy scalar's tolist() is its Python value
    return value


def engine_runs(rows: list[dict[str, Any]]) -> list[Any]:
    """Store rows -> the sweep engine's SweepRun objects. Interrupted runs are left out: they are no result
    (bayes must not learn from them, grid must not count their point done), and their re-run carries the
    same config."""
    sweeps = sweeps_engine()
    return [
        sweeps.SweepRun(
            name=row["id"],
            state=SWEEP_TO_ENGINE_STATE[row["state"]],
            config={k: {"value": v} for k, v in row["config"].items()},
            history=row.get("history", []),
            summary_metrics=row.get("summary") or {},
            search_info=row.get("search_info"),
        )
        for row in rows
        if row["state"] in SWEEP_TO_ENGINE_STATE
    ]


def next_params(config: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[dict[str, Any], Any] | None:
    """The engine's next suggestion as flat params (and its search info), or None when exhausted."""
    suggestion = sweeps_engine().next_run(config, engine_runs(rows))
    if suggestion is None:
        return None
    params = {k: plain(v["value"]) for k, v in suggestion.config.items()}
    return params, plain(suggestion.search_info)


def runs_to_stop(config: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    if (config.get("early_terminate") or {}).get("type") != "hyperband":
        return []
    return [run.name for run in sweeps_engine().stop_runs(config, engine_runs(rows))]
