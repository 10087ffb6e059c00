"""Readable views of a sweep: the status table, its JSON form, the best config as YAML."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ignite_sweep.backends.base import RunRecord, SweepRecord
from ignite_sweep.format import fmt, fmt_runtime

STATE_STYLE = {
    "running": "cyan",
    "finished": "green",
    "stopped": "yellow",
    "failed": "red",
    "crashed": "magenta",
    "interrupted": "blue",
}

NO_METRIC = "no metric: this sweep's YAML has no `metric:`, so no run is scored and there is no best run"


def swept_names(sweep: SweepRecord, runs: list[RunRecord]) -> list[str] | None:
    """Top-level parameters that vary in the sweep (fixed ones add nothing to a view), as a run's config names
    them: the pool's live view filters a run's params by these (None: show them all, a custom sweep's
    ``search_space`` function names its own). Tables use ``param_columns``."""
    params = sweep.config.get("parameters", {}) or {}
    names = [n for n, spec in params.items() if not (isinstance(spec, dict) and "value" in spec)]
    if not names and (sweep.config.get("scheduler") or {}).get("search_space"):
        return None
    return names or sorted({k for r in runs for k in r.config})


def param_columns(sweep: SweepRecord, runs: list[RunRecord]) -> list[str]:
    """The swept parameters as table columns and plot axes: a nested parameter (``model: {parameters: {hidden:
    ...}}``) is one column per swept leaf, dotted (``model.hidden``), not one column of dicts."""
    params = sweep.config.get("parameters", {}) or {}
    names = list(_swept_leaves(params, ""))
    by_function = bool((sweep.config.get("scheduler") or {}).get("search_space"))  # its own names: not the fixed
    fixed = {n for n, spec in params.items() if isinstance(spec, dict) and "value" in spec} if by_function else set()
    return names or sorted({k for r in runs for k in _flat(r.config, "") if k not in fixed})


def _swept_leaves(params: dict[str, Any], prefix: str) -> Iterator[str]:
    for name, spec in params.items():
        if isinstance(spec, dict) and isinstance(spec.get("parameters"), dict):
            yield from _swept_leaves(spec["parameters"], f"{prefix}{name}.")
        elif not (isinstance(spec, dict) and "value" in spec):
            yield f"{prefix}{name}"


def _flat(config: dict[str, Any], prefix: str) -> Iterator[str]:
    for name, value in config.items():
        if isinstance(value, dict) and value:
            yield from _flat(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def param_value(config: dict[str, Any], column: str) -> Any:
    """A run's value in a ``param_columns`` column: ``model.hidden`` is ``config["model"]["hidden"]`` (a name
    with a dot of its own is found as it is first)."""
    if column in config:
        return config[column]
    value: Any = config
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def counts(runs: list[RunRecord]) -> str:
    tally: dict[str, int] = {}
    for run in runs:
        tally[run.state] = tally.get(run.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(tally.items())) or "no runs yet"


def front_of(sweep: SweepRecord, runs: list[RunRecord]) -> list[RunRecord] | None:
    """A multi-objective sweep's Pareto front (``ignite_sweep.pareto``); None for any other sweep."""
    from ignite_sweep.pareto import pareto_front

    return pareto_front(runs, sweep.objectives) if sweep.multi_objective else None


def status_table(sweep: SweepRecord, runs: list[RunRecord], best: RunRecord | None,
                 front: list[RunRecord] | None = None) -> Any:  # fmt: skip
    """The runs, one row each; the best run marked ``*`` (a ``metrics:`` sweep: each run on the Pareto front,
    ``front``, and a column per objective)."""
    from rich.table import Table

    objectives = sweep.objectives if sweep.multi_objective else []
    metric = sweep.metric
    names = param_columns(sweep, runs)
    goal = f" ({sweep.goal})" if metric else ""
    reason = f": {sweep.reason}" if sweep.reason else ""
    table = Table(
        title=f"{sweep.id}  {sweep.name}  {sweep.method}, {sweep.state}{reason}  [{counts(runs)}]",
        title_justify="left",
    )
    table.add_column("run", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for name in names:
        table.add_column(name, justify="right")
    if metric:
        table.add_column(f"{metric}{goal}", justify="right")
    for name, objective_goal in objectives:
        table.add_column(f"{name} ({objective_goal})", justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("runtime", justify="right")
    table.add_column("slot", justify="right")
    table.add_column("note", overflow="fold")  # the error, or the run it continues
    marked = {r.id for r in front or []} if objectives else ({best.id} if best is not None else set())
    for run in runs:
        is_best = run.id in marked
        row = [f"{run.id} *" if is_best else run.id, f"[{STATE_STYLE.get(run.state, 'white')}]{run.state}[/]"]
        row += [fmt(param_value(run.config, n)) for n in names]
        if metric:
            row.append(fmt(run.metric(metric)))
        row += [fmt(run.metric(name)) for name, _ in objectives]
        row += [
            fmt(run.epochs_reached),
            fmt_runtime(run.runtime_s),
            fmt(run.slot),
            "; ".join(x for x in (f"continues {run.continues}" if run.continues else "", run.error or "") if x),
        ]
        table.add_row(*row, style="bold" if is_best else None)
    if objectives:
        table.caption = (f"* Pareto front: {len(marked)} run{'s' if len(marked) != 1 else ''} no other result "
                         f"beats on every objective" if marked else "no result with every objective yet")
    elif not metric:
        table.caption = NO_METRIC
    elif best is not None:
        table.caption = f"* best run: {best.id} ({metric} = {fmt(best.metric(metric))})"
    table.caption_justify = "left"
    return table


def status_json(sweep: SweepRecord, runs: list[RunRecord], best: RunRecord | None,
                front: list[RunRecord] | None = None) -> dict[str, Any]:  # fmt: skip
    """``{sweep, runs}``; a ``metrics:`` sweep adds its Pareto front: the sweep's ``pareto_front`` (run ids) and
    each run's ``pareto`` (true or false)."""
    if not sweep.multi_objective:
        return {
            "sweep": {**sweep.to_json(), "best_run": best.id if best else None},
            "runs": [run.to_json() for run in runs],
        }
    on = {r.id for r in front or []}
    return {
        "sweep": {**sweep.to_json(), "best_run": None, "pareto_front": [r.id for r in runs if r.id in on]},
        "runs": [{**run.to_json(), "pareto": run.id in on} for run in runs],
    }


def best_yaml(sweep: SweepRecord, run: RunRecord, metric: str | None = None) -> str:
    """The run's config as YAML, under a header naming it and its value of ``metric`` (default: the sweep's)."""
    import yaml

    metric = metric or sweep.metric or ""
    header = f"# best run {run.id} of sweep {sweep.id} ({metric} = {fmt(run.metric(metric))})\n# {_how(sweep)}\n"
    return header + yaml.safe_dump(dict(run.config), sort_keys=False)


def front_yaml(sweep: SweepRecord, front: list[RunRecord]) -> str:
    """A ``metrics:`` sweep's Pareto front as YAML documents, one config each (``---`` between them), in the order
    of the first objective, best first; each under a line naming the run and its value on every objective."""
    import yaml

    first, goal = sweep.objectives[0]
    sign = -1.0 if goal == "maximize" else 1.0
    ordered = sorted(front, key=lambda r: sign * (r.metric(first) or 0.0))
    names = ", ".join(f"{n} ({g})" for n, g in sweep.objectives)
    header = (f"# the Pareto front of sweep {sweep.id} on {names}: {len(front)} run{'s' if len(front) != 1 else ''}"
              f", best {first} first; one of them: ignite-sweep best {sweep.id} --metric NAME\n"
              f"# {_how(sweep)} (one document each)\n")
    docs = []
    for run in ordered:
        scores = ", ".join(f"{n} = {fmt(run.metric(n))}" for n, _ in sweep.objectives)
        docs.append(f"# run {run.id} ({scores})\n" + yaml.safe_dump(dict(run.config), sort_keys=False))
    return header + "---\n".join(docs)


def _how(sweep: SweepRecord) -> str:
    from ignite_sweep.sweepfile import is_program_sweep

    if is_program_sweep(sweep.config):
        return f"{sweep.config.get('program') or ' '.join(map(str, sweep.config.get('command', [])))}'s parameters"
    return "python -m ignite_sweep.train --config best.yaml"
