"""Readable views of a sweep: the status table, its JSON form, the best config as YAML."""

from __future__ import annotations

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


def swept_names(sweep: SweepRecord, runs: list[RunRecord]) -> list[str]:
    """Parameters that vary in the sweep (fixed ones add nothing to a table)."""
    params = sweep.config.get("parameters", {})
    names = [n for n, spec in params.items() if not (isinstance(spec, dict) and "value" in spec)]
    return names or sorted({k for r in runs for k in r.config})


def counts(runs: list[RunRecord]) -> str:
    tally: dict[str, int] = {}
    for run in runs:
        tally[run.state] = tally.get(run.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(tally.items())) or "no runs yet"


def status_table(sweep: SweepRecord, runs: list[RunRecord], best: RunRecord | None) -> Any:
    from rich.table import Table

    metric = sweep.metric
    names = swept_names(sweep, runs)
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
    table.add_column("epochs", justify="right")
    table.add_column("runtime", justify="right")
    table.add_column("slot", justify="right")
    table.add_column("note", overflow="fold")  # the error, or the run it continues
    for run in runs:
        is_best = best is not None and run.id == best.id
        row = [f"{run.id} *" if is_best else run.id, f"[{STATE_STYLE.get(run.state, 'white')}]{run.state}[/]"]
        row += [fmt(run.config.get(n)) for n in names]
        if metric:
            row.append(fmt(run.metric(metric)))
        row += [
            fmt(run.summary.get("epochs_completed")),
            fmt_runtime(run.runtime_s),
            fmt(run.slot),
            "; ".join(x for x in (f"continues {run.continues}" if run.continues else "", run.error or "") if x),
        ]
        table.add_row(*row, style="bold" if is_best else None)
    if best is not None:
        table.caption = f"* best run: {best.id} ({metric} = {fmt(best.metric(metric or ''))})"
        table.caption_justify = "left"
    return table


def status_json(sweep: SweepRecord, runs: list[RunRecord], best: RunRecord | None) -> dict[str, Any]:
    return {
        "sweep": {**sweep.to_json(), "best_run": best.id if best else None},
        "runs": [run.to_json() for run in runs],
    }


def best_yaml(sweep: SweepRecord, run: RunRecord) -> str:
    import yaml

    from ignite_sweep.sweepfile import is_program_sweep

    metric = sweep.metric or ""
    how = "python -m ignite_sweep.train --config best.yaml"
    if is_program_sweep(sweep.config):
        how = f"{sweep.config.get('program') or ' '.join(map(str, sweep.config.get('command', [])))}'s parameters"
    header = f"# best run {run.id} of sweep {sweep.id} ({metric} = {fmt(run.metric(metric))})\n# {how}\n"
    return header + yaml.safe_dump(dict(run.config), sort_keys=False)
