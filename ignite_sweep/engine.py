"""W&B's open-source sweep engine (``sweeps``) as pure functions over run rows.

``next_params`` asks the engine for the next config, ``runs_to_stop`` for hyperband's stops. What comes back
is plain Python (int, float, str, bool, lists and dicts of them): the engine hands out numpy scalars
(``int64`` from ``q_uniform`` with an integer ``q``, ``bool_``...), which JSON, SQLite and wandb refuse.
No I/O here: the local backend stores and fetches, this module only decides.
"""

from __future__ import annotations

import math
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
    """The engine's next suggestion as flat params (and its search info), or None when exhausted.

    Bayes learns only from results: a run that ended without ever logging the sweep's metric (a program whose
    metric name does not match, say) is left out, where the engine would give it a made-up value (the worst seen,
    or 0)."""
    metric = (config.get("metric") or {}).get("name")
    if config.get("method") == "bayes" and metric:
        rows = [r for r in rows if not _no_result(r, metric)]
    suggestion = sweeps_engine().next_run(config, engine_runs(rows))
    if suggestion is None:
        return None
    params = {k: plain(v["value"]) for k, v in suggestion.config.items()}
    return params, plain(suggestion.search_info)


def _no_result(row: dict[str, Any], metric: str) -> bool:
    """A run that ended as a result (finished, or stopped by the sweep) without one valid value of ``metric``."""
    if row["state"] not in ("finished", "stopped"):
        return False
    values = [h.get(metric) for h in row.get("history") or []] + [(row.get("summary") or {}).get(metric)]
    return not any(is_number(v) for v in values)


def runs_to_stop(config: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    if (config.get("early_terminate") or {}).get("type") != "hyperband":
        return []
    return [run.name for run in sweeps_engine().stop_runs(config, engine_runs(rows))]


# ---------------------------------------------------------------- what the store keeps up to date for the engine
# At 10,000 runs, handing the engine every run (with its history) on every claim and report costs seconds. For
# grid and hyperband the store keeps what these decisions need instead; the two classes below reproduce the
# engine's own rules on that (tests/test_scale.py compares them with the engine on recorded sweeps). Random
# search reads no runs at all. Bayes still gets every run: its Gaussian process needs them.


def is_number(value: Any) -> bool:
    """The engine's ``is_number``: a finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Scoring:
    """The sweep metric as the engine compares it (lower is better: a maximized metric is negated) and, with
    ``early_terminate: hyperband``, its bands: the evaluation counts at which runs are compared."""

    def __init__(self, config: dict[str, Any]) -> None:
        metric = config.get("metric") or {}
        self.metric: str | None = metric.get("name")
        self.sign = -1.0 if metric.get("goal") == "maximize" else 1.0
        self.bands: tuple[int, ...] = ()
        self.r, self.strict = 0.0, False
        if (config.get("early_terminate") or {}).get("type") == "hyperband" and self.metric:
            self.bands, self.r, self.strict = hyperband_bands(config)
        self.band_set = frozenset(self.bands)

    def score(self, metrics: dict[str, Any] | None) -> float | None:
        """The metric's value in ``metrics`` as the engine compares it, or None when absent or not a number."""
        value = (metrics or {}).get(self.metric) if self.metric else None
        return self.sign * value if is_number(value) else None

    def closest_band(self, evaluations: int) -> int | None:
        """The largest band a run with this many valid metric values has reached (None: none yet)."""
        reached = [b for b in self.bands if b <= evaluations]
        return reached[-1] if reached else None


def hyperband_bands(config: dict[str, Any]) -> tuple[tuple[int, ...], float, bool]:
    """(bands, r, strict) exactly as ``sweeps.hyperband_stopping.hyperband_stop_runs`` derives them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sweeps.hyperband_stopping import hyperband_baseline_validate_and_fill

    et = hyperband_baseline_validate_and_fill(config)["early_terminate"]
    bands: list[int] = []
    if "max_iter" in et:
        band = et["max_iter"]
        for _ in range(et["s"]):
            band /= et["eta"]
            if band < 1:
                break
            bands.append(int(band))
    elif "min_iter" in et:
        band = et["min_iter"]
        for _ in range(100):
            bands.append(int(band))
            band *= et["eta"]
    if not bands:
        raise ValueError("hyperband: no bands; try increasing s, decreasing eta, or increasing min_iter")
    return tuple(sorted(bands)), 1.0 / et["eta"], et.get("strict") is True


class GridPlan:
    """The engine's grid: its points in the order ``grid_search_next_runs`` walks them (the last parameter
    varies fastest), each with the key the engine dedupes runs by (a tuple of ``yaml_hash`` per value)."""

    def __init__(self, config: dict[str, Any]) -> None:
        import numpy as np

        sweeps = sweeps_engine()
        from sweeps.grid_search import yaml_hash
        from sweeps.params import HyperParameter, HyperParameterSet

        params = HyperParameterSet.from_config(config["parameters"])
        for i, p in enumerate(params):  # as the engine turns ranges into lists
            if p.type == HyperParameter.INT_UNIFORM:
                params[i] = HyperParameter(p.name, {"distribution": "categorical",
                                                    "values": list(range(p.config["min"], p.config["max"] + 1))})
            elif p.type == HyperParameter.Q_UNIFORM:
                params[i] = HyperParameter(p.name, {"distribution": "categorical", "values": np.arange(
                    p.config["min"], p.config["max"], p.config["q"]).tolist()})  # fmt: skip
        self._params = params
        self._discrete = [p for p in params if p.type == HyperParameter.CATEGORICAL]
        self._values = [p.config["values"] for p in self._discrete]
        self._hashes = [[yaml_hash(v) for v in values] for values in self._values]
        # value by hash, as the engine looks it up: of values with equal hashes (1 and 1.0), the last one
        self._lookup = [dict(zip(h, v, strict=True)) for h, v in zip(self._hashes, self._values, strict=True)]
        self._known_keys = {p.name: {k for v in values if isinstance(v, dict) for k in v}
                            for p, values in zip(self._discrete, self._values, strict=True)}  # fmt: skip
        self._yaml_hash, self._util = yaml_hash, sweeps.util
        self._delimiter = HyperParameterSet.NESTING_DELIMITER
        self.size = math.prod(len(v) for v in self._values)

    def _digits(self, index: int) -> list[int]:
        digits = []
        for values in reversed(self._values):
            index, digit = divmod(index, len(values))
            digits.append(digit)
        return digits[::-1]

    def key(self, index: int) -> str:
        """The engine's dedupe key of point ``index`` (the hashes joined)."""
        return ",".join(h[d] for h, d in zip(self._hashes, self._digits(index), strict=True))

    def params(self, index: int) -> dict[str, Any]:
        """Point ``index`` as flat run params, as ``next_params`` returns the engine's suggestion."""
        for p, hashes, lookup, d in zip(self._discrete, self._hashes, self._lookup, self._digits(index), strict=True):
            p.value = lookup[hashes[d]]
        return {k: plain(v["value"]) for k, v in self._params.to_config().items()}

    def run_key(self, run_config: dict[str, Any]) -> str:
        """The key the engine computes for a run with these flat params (a run missing a parameter gets a key
        no point has, as in the engine)."""
        config = {k: {"value": v} for k, v in run_config.items()}
        hashes = []
        for p in self._discrete:
            nested = p.name.split(self._delimiter)
            nested.insert(1, "value")
            if not self._util.dict_has_nested_key(config, nested):
                return "missing:" + p.name
            value = self._util.get_nested_value(config, nested)
            if self._known_keys.get(p.name) and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k in self._known_keys[p.name]}
            hashes.append(self._yaml_hash(value))
        return ",".join(hashes)
