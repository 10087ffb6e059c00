"""The sweep report: W&B's sweep panels, offline, as one self-contained HTML file (plotly, its JS embedded)
or a static PNG (matplotlib).

Panels: parallel coordinates (swept parameters -> metric), parameter importance and correlation with the
metric (as W&B's panel: random-forest importance plus Pearson correlation), optimisation history (metric by
run order, best so far), validation curves of every run (stopped and crashed runs drawn as such) and the
run table, best run on top. A sweep without a metric gets the run table alone (parameters, states, runtimes).
A multi-objective sweep (``metrics:``) gets its Pareto front too: a scatter of its first two objectives, the
front's runs marked and joined, every objective in the table (the front first); the other panels plot its first
objective.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ignite_sweep.backends.base import RunRecord, SweepRecord
from ignite_sweep.errors import BackendError
from ignite_sweep.format import fmt, fmt_runtime
from ignite_sweep.pareto import pareto_front, values
from ignite_sweep.report.tables import param_columns, param_value

STATE_COLOR = {"finished": "#2ca02c", "stopped": "#ff7f0e", "failed": "#d62728", "crashed": "#9467bd",
               "running": "#1f77b4", "interrupted": "#7f7f7f"}  # fmt: skip
NO_METRIC_PLOTS = (
    "the sweep's YAML has no `metric:`, so this report has no metric plots (parallel coordinates, "
    "importance, optimisation history, validation curves): the runs' parameters, states and runtimes "
    "only. Add `metric: {name: <a value the runs log>, goal: maximize}` (or minimize) to the YAML of "
    "the next sweep"
)


@dataclass
class SweepData:
    sweep: SweepRecord
    runs: list[RunRecord]  # in creation order
    params: list[str]  # columns: a nested parameter's leaves, dotted (model.hidden)
    metric: str | None  # None: the sweep has no metric (W&B allows it), so the report has no metric plots
    sign: float  # +1 maximize, -1 minimize
    objectives: list[tuple[str, str]] = field(default_factory=list)  # a metrics: sweep's (else empty)
    front: list[str] = field(default_factory=list)  # the ids of its runs on the Pareto front

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def scored(self) -> list[RunRecord]:
        """Runs with the metric, interrupted ones left out: they are no result (their re-run is)."""
        return [r for r in self.runs if r.state != "interrupted" and self.value(r) is not None]

    def best_first(self) -> list[RunRecord]:
        """Best first (a multi-objective sweep: the front first, each part by its first objective)."""
        on = set(self.front)
        scored = sorted(self.scored, key=lambda r: (r.id not in on, -self.sign * (self.value(r) or 0.0)))
        ids = {r.id for r in scored}
        return scored + [r for r in self.runs if r.id not in ids]

    def value(self, run: RunRecord) -> float | None:
        """The run's sweep metric; None without one (or without a metric at all)."""
        return run.metric(self.metric) if self.metric else None

    def column(self, name: str, runs: list[RunRecord]) -> tuple[list[float], list[str] | None]:
        """A parameter's values as numbers; categorical values become codes (with their labels)."""
        values = [param_value(r.config, name) for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return [float(v) for v in values], None
        labels = sorted({str(v) for v in values})
        return [float(labels.index(str(v))) for v in values], labels


def collect(sweep: SweepRecord, runs: list[RunRecord]) -> SweepData:
    metric, goal = sweep.metric, sweep.goal
    objectives = sweep.objectives if sweep.multi_objective else []
    if objectives:  # the panels of one metric plot the first objective; the front has its own
        metric, goal = objectives[0]
    data = SweepData(sweep, runs, param_columns(sweep, runs), metric, 1.0 if goal == "maximize" else -1.0,
                     objectives, [r.id for r in pareto_front(runs, objectives)] if objectives else [])  # fmt: skip
    if metric is None:
        if not runs:
            raise BackendError(f"sweep '{sweep.id}' has no runs yet: nothing to report")
        return data
    if not any(r.state in ("finished", "stopped") and r.metric(metric) is not None for r in runs):
        raise BackendError(f"sweep '{sweep.id}' has no finished run with {metric} yet: nothing to report")
    return data


def importance(data: SweepData) -> list[tuple[str, float, float]]:
    """(parameter, random-forest importance, correlation with the metric), most important first."""
    import numpy as np

    runs = data.scored
    y = np.array([data.value(r) for r in runs], dtype=float)
    columns = [data.column(p, runs)[0] for p in data.params]
    x = np.array(columns, dtype=float).T if columns else np.zeros((len(runs), 0))
    result = []
    forest = None
    if len(runs) >= 3 and x.shape[1]:
        from sklearn.ensemble import RandomForestRegressor

        forest = RandomForestRegressor(n_estimators=100, random_state=0).fit(x, y)
    for i, name in enumerate(data.params):
        col = x[:, i]
        corr = float(np.corrcoef(col, y)[0, 1]) if len(runs) > 1 and col.std() > 0 and y.std() > 0 else 0.0
        result.append((name, float(forest.feature_importances_[i]) if forest is not None else 0.0, corr))
    return sorted(result, key=lambda t: -t[1])


def curves(run: RunRecord, metric: str) -> tuple[list[float], list[float]]:
    points = [(h.get("epoch", i + 1), h[metric]) for i, h in enumerate(run.history) if metric in h]
    return [float(e) for e, _ in points], [float(v) for _, v in points]


# ---------------------------------------------------------------- HTML (plotly)


def figures(data: SweepData) -> list[tuple[str, Any]]:
    """The plotly panels; none for a sweep without a metric (each plots the metric)."""
    if data.metric is None:
        return []
    import plotly.graph_objects as go

    runs = data.scored
    metric_values = [data.value(r) for r in runs]
    dims = []
    for name in data.params:
        values, labels = data.column(name, runs)
        dim: dict[str, Any] = {"label": name, "values": values}
        if labels is not None:
            dim.update(tickvals=list(range(len(labels))), ticktext=labels)
        dims.append(dim)
    dims.append({"label": data.metric, "values": metric_values})
    parcoords = go.Figure(go.Parcoords(
        line={"color": metric_values, "colorscale": "Viridis", "showscale": True,
              "reversescale": data.sign < 0},
        dimensions=dims,
    ))  # fmt: skip
    parcoords.update_layout(title="Parallel coordinates", height=420)

    ranked = importance(data)
    imp = go.Figure()
    imp.add_bar(name="importance", y=[n for n, _, _ in ranked], x=[i for _, i, _ in ranked], orientation="h")
    imp.add_bar(name=f"correlation with {data.metric}", y=[n for n, _, _ in ranked], x=[c for _, _, c in ranked],
                orientation="h", marker_color=["#2ca02c" if c >= 0 else "#d62728" for _, _, c in ranked])  # fmt: skip
    imp.update_layout(title="Parameter importance (random forest) and correlation", barmode="group", height=360)

    history = go.Figure()
    order = [data.runs.index(r) + 1 for r in runs]
    best, so_far = [], -math.inf
    for v in metric_values:
        so_far = max(so_far, data.sign * (v or 0.0))
        best.append(data.sign * so_far)
    history.add_scatter(x=order, y=metric_values, mode="markers", name="run",
                        text=[r.id for r in runs], marker={"color": [STATE_COLOR[r.state] for r in runs]})  # fmt: skip
    history.add_scatter(x=order, y=best, mode="lines", name="best so far", line={"shape": "hv"})
    history.update_layout(title="Optimisation history", xaxis_title="run", yaxis_title=data.metric, height=360)

    curves_fig = go.Figure()
    for run in data.runs:
        xs, ys = curves(run, data.metric)
        if not xs:
            continue
        dash = {"finished": "solid", "stopped": "dash", "crashed": "dot", "failed": "dot"}.get(run.state, "solid")
        curves_fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=f"{run.id} ({run.state})",
                               line={"dash": dash, "color": STATE_COLOR.get(run.state)}, opacity=0.8)  # fmt: skip
    title = f"Validation curves ({data.metric} by epoch; dashed: stopped early, dotted: crashed/failed)"
    curves_fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=data.metric, height=420)
    curves_fig.update_xaxes(dtick=1)
    panels = [("parcoords", parcoords), ("importance", imp), ("history", history), ("curves", curves_fig)]
    return ([("pareto", pareto_figure(data))] + panels) if data.multi else panels


def front_points(data: SweepData) -> tuple[list[tuple[RunRecord, tuple[float, ...]]], list[RunRecord]]:
    """(every result with a value on each objective and its values, the front's runs ordered along the first
    objective): what the Pareto panels draw."""
    scored = [(r, v) for r in data.runs if r.state in ("finished", "stopped")
              and (v := values(r.summary, data.objectives)) is not None]  # fmt: skip
    on = set(data.front)
    front = sorted((r for r, _ in scored if r.id in on), key=lambda r: r.metric(data.objectives[0][0]) or 0.0)
    return scored, front


def pareto_figure(data: SweepData) -> Any:
    """The Pareto front: the first two objectives of every result, the front's runs marked and joined (hover: the
    run and its value on every objective)."""
    import plotly.graph_objects as go

    (x_name, x_goal), (y_name, y_goal) = data.objectives[:2]
    scored, front = front_points(data)
    on = set(data.front)

    def hover(run: RunRecord) -> str:
        return f"{run.id} ({run.state})<br>" + "<br>".join(f"{n} = {fmt(run.metric(n))}" for n, _ in data.objectives)

    others = [r for r, _ in scored if r.id not in on]
    fig = go.Figure()
    fig.add_scatter(x=[r.metric(x_name) for r in others], y=[r.metric(y_name) for r in others], mode="markers",
                    name="dominated", marker={"color": "#aaaaaa", "size": 8},
                    hovertext=[hover(r) for r in others], hoverinfo="text")  # fmt: skip
    fig.add_scatter(x=[r.metric(x_name) for r in front], y=[r.metric(y_name) for r in front], mode="lines+markers",
                    name="Pareto front", marker={"color": "#d62728", "size": 11, "symbol": "diamond"},
                    line={"shape": "hv", "dash": "dot"}, hovertext=[hover(r) for r in front],
                    hoverinfo="text")  # fmt: skip
    others_named = ", ".join(n for n, _ in data.objectives[2:])
    rest = f"; the others ({others_named}) in the table" if others_named else ""
    fig.update_layout(title=f"Pareto front: {len(front)} of {len(scored)} results{rest}", height=420,
                      xaxis_title=f"{x_name} ({x_goal})", yaxis_title=f"{y_name} ({y_goal})")  # fmt: skip
    return fig


def run_table_html(data: SweepData) -> str:
    if data.multi:
        metric_head = [f"{n} ({g})" for n, g in data.objectives]
    else:
        metric_head = [data.metric] if data.metric else []
    head = ["run", "state", *data.params, *metric_head, "epochs", "runtime", "error"]
    rows = []
    on = set(data.front)
    for i, run in enumerate(data.best_first()):
        if data.multi:
            mark = " (Pareto front)" if run.id in on else ""
        else:
            mark = " (best)" if i == 0 and data.value(run) is not None else ""
        cells = [run.id + mark, run.state]
        cells += [fmt(param_value(run.config, p)) for p in data.params]
        if data.multi:
            cells += [fmt(run.metric(n)) for n, _ in data.objectives]
        else:
            cells += [fmt(data.value(run))] if metric_head else []
        cells += [fmt(run.epochs_reached), fmt_runtime(run.runtime_s), run.error or ""]
        color = STATE_COLOR.get(run.state, "#000")
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        rows.append(f'<tr style="border-left: 4px solid {color}">{tds}</tr>')
    ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table class="runs"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


CHECK_SCRIPT = """
<script>
window.__reportErrors = [];
window.addEventListener('error', function (e) { window.__reportErrors.push(String(e.message)); });
window.addEventListener('load', function () {
  var drawn = document.querySelectorAll('.js-plotly-plot .main-svg').length;
  document.body.setAttribute('data-plots-drawn', String(drawn));
  document.body.setAttribute('data-js-errors', String(window.__reportErrors.length));
});
</script>
"""


def write_html(data: SweepData, path: Path) -> Path:
    import plotly.io as pio

    parts = []
    for i, (name, fig) in enumerate(figures(data)):
        parts.append(f'<section id="{name}">'
                     + pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False, div_id=f"plot-{name}")
                     + "</section>")  # fmt: skip
    sweep = data.sweep
    counts: dict[str, int] = {}
    for run in data.runs:
        counts[run.state] = counts.get(run.state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    title = f"Sweep {sweep.name} ({sweep.id})"
    if data.metric is None:
        what, order = f"<b>no metric</b>: {html.escape(NO_METRIC_PLOTS)}", "in creation order"
    elif data.multi:
        names = ", ".join(f"<b>{html.escape(n)}</b> ({html.escape(g)})" for n, g in data.objectives)
        what = f"objectives {names}; Pareto front: {len(data.front)} runs"
        order = "the Pareto front first, then by " + html.escape(data.metric)
    else:
        what, order = f"metric <b>{html.escape(data.metric)}</b> ({html.escape(sweep.goal)})", "best first"
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>{CHECK_SCRIPT}
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} section{{margin-bottom:24px}}
table.runs{{border-collapse:collapse;font-size:13px}} table.runs td,table.runs th{{padding:4px 8px;
border-bottom:1px solid #ddd;text-align:right}} table.runs th{{background:#f4f4f4}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{html.escape(sweep.method)} search, {len(data.runs)} runs: {html.escape(summary)}; {what}.</p>
{"".join(parts)}
<section id="runs"><h2>Runs ({order})</h2>{run_table_html(data)}</section>
</body></html>"""
    path.write_text(doc, encoding="utf-8")
    return path


# ---------------------------------------------------------------- PNG (matplotlib)


def write_png(data: SweepData, path: Path) -> Path:
    if data.metric is None:  # every panel plots the metric
        raise BackendError(
            f"no PNG written: sweep '{data.sweep.id}' has no metric to plot (the HTML report has its runs)"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(3 if data.multi else 2, 2, figsize=(14, 15 if data.multi else 10))
    runs = data.scored
    y = np.array([data.value(r) for r in runs], dtype=float)

    ax = axes[0, 0]  # parallel coordinates, each axis scaled to [0, 1]
    names = [*data.params, data.metric]
    columns = [np.array(data.column(p, runs)[0]) for p in data.params] + [y]
    scaled = [(c - c.min()) / (c.max() - c.min()) if c.max() > c.min() else np.full_like(c, 0.5) for c in columns]
    colors = plt.cm.viridis((y - y.min()) / (y.max() - y.min()) if y.max() > y.min() else np.full_like(y, 0.5))
    for i in range(len(runs)):
        ax.plot(range(len(names)), [s[i] for s in scaled], color=colors[i], alpha=0.8)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yticks([])
    ax.set_title("Parallel coordinates (each axis min..max)")

    ax = axes[0, 1]
    ranked = importance(data)
    pos = np.arange(len(ranked))
    ax.barh(pos - 0.2, [i for _, i, _ in ranked], height=0.4, label="importance")
    ax.barh(pos + 0.2, [c for _, _, c in ranked], height=0.4, label=f"correlation with {data.metric}")
    ax.set_yticks(pos, [n for n, _, _ in ranked])
    ax.axvline(0, color="#888", lw=0.5)
    ax.legend()
    ax.set_title("Parameter importance and correlation")

    ax = axes[1, 0]
    order = [data.runs.index(r) + 1 for r in runs]
    ax.scatter(order, y, c=[STATE_COLOR[r.state] for r in runs])
    best = data.sign * np.maximum.accumulate(data.sign * y)
    ax.step(order, best, where="post", label="best so far")
    ax.set_xlabel("run")
    ax.set_ylabel(data.metric)
    ax.legend()
    ax.set_title("Optimisation history")

    ax = axes[1, 1]
    for run in data.runs:
        xs, ys = curves(run, data.metric)
        if xs:
            style = {"finished": "-", "stopped": "--"}.get(run.state, ":")
            ax.plot(xs, ys, style, marker="o", color=STATE_COLOR.get(run.state), label=f"{run.id} ({run.state})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(data.metric)
    ax.set_title("Validation curves (dashed: stopped, dotted: crashed/failed)")
    if len(data.runs) <= 12:
        ax.legend(fontsize=7)
    if data.multi:
        _png_front(data, axes[2, 0])
        _png_front_table(data, axes[2, 1])
    fig.suptitle(f"Sweep {data.sweep.name} ({data.sweep.id}): {data.sweep.method}, {len(data.runs)} runs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _png_front(data: SweepData, ax: Any) -> None:
    """The Pareto panel of the PNG: the first two objectives, the front marked and joined."""
    (x_name, x_goal), (y_name, y_goal) = data.objectives[:2]
    scored, front = front_points(data)
    on = set(data.front)
    others = [r for r, _ in scored if r.id not in on]
    ax.scatter([r.metric(x_name) for r in others], [r.metric(y_name) for r in others], color="#aaaaaa",
               label="dominated")  # fmt: skip
    ax.step([r.metric(x_name) for r in front], [r.metric(y_name) for r in front], where="post", linestyle=":",
            color="#d62728")  # fmt: skip
    ax.scatter([r.metric(x_name) for r in front], [r.metric(y_name) for r in front], color="#d62728", marker="D",
               s=50, label="Pareto front")  # fmt: skip
    for run in front:
        ax.annotate(run.id, (run.metric(x_name), run.metric(y_name)), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel(f"{x_name} ({x_goal})")
    ax.set_ylabel(f"{y_name} ({y_goal})")
    ax.legend()
    ax.set_title(f"Pareto front: {len(front)} of {len(scored)} results")


def _png_front_table(data: SweepData, ax: Any) -> None:
    """The front's runs with their value on every objective (the scatter shows two)."""
    _, front = front_points(data)
    ax.axis("off")
    ax.set_title("The Pareto front, every objective")
    if front:
        cells = [[r.id, *(fmt(r.metric(n)) for n, _ in data.objectives)] for r in front[:20]]
        table = ax.table(cellText=cells, colLabels=["run", *(f"{n} ({g})" for n, g in data.objectives)],
                         loc="upper center")  # fmt: skip
        table.auto_set_font_size(False)
        table.set_fontsize(8)
