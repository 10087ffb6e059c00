"""The ``ignite-sweep`` command line: thin; parses options, calls the library, prints.

``main()`` is the one place that turns an IgniteSweepError into a one-line message and exit code 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ignite_sweep.errors import IgniteSweepError

app = typer.Typer(
    help="Hyperparameter sweeps over PyTorch Ignite training, driven by W&B sweep YAML.\n\n"
    "Backends: 'wandb' (W&B's sweep controller, agents on many machines) and 'local' (SQLite + W&B's "
    "open-source sweep engine, runs logged with wandb offline; no account, no network).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend", envvar="IGNITE_SWEEP_BACKEND",
        help="auto | local | wandb. auto: W&B when a W&B login is found and WANDB_MODE is not offline, "
        "else local.",
    ),
]  # fmt: skip
ProjectOpt = Annotated[str | None, typer.Option(help="W&B project (default: the YAML's, else ignite-sweep).")]
EntityOpt = Annotated[str | None, typer.Option(help="W&B entity (default: your W&B default entity).")]
CountOpt = Annotated[int | None, typer.Option(min=1, help="Run at most this many runs, then exit.")]
FuseOpt = Annotated[
    int, typer.Option(min=1, help="Train up to K runs of the built-in trainer together in one process (one model over "
                      "stacked parameters; local backend): more runs per hour for small models. K per slot with "
                      "--workers/--gpus. Runs that cannot train together train alone, with a line saying why.")
]  # fmt: skip
FailuresOpt = Annotated[int, typer.Option(min=1, help="Exit after this many runs in a row failed or crashed.")]
GpusOpt = Annotated[
    str | None,
    typer.Option(help="Fan out over GPUs: 'all' or indices like 0,1,3. One agent per slot, each sees only its GPU."),
]
PerGpuOpt = Annotated[int, typer.Option(min=1, help="Agents per GPU (with --gpus).")]
WorkersOpt = Annotated[
    int | None, typer.Option(min=1, help="Fan out over N CPU agents; the cores are split between them.")
]
StaggerOpt = Annotated[
    float, typer.Option(min=0.0, help="Seconds between slot starts, so parallel bayes agents differ at first.")
]
KillDelayOpt = Annotated[
    int | None,
    typer.Option("--kill-delay", min=0, help="Program sweeps: seconds from a stop's SIGTERM to SIGKILL of the "
                 "program's process group (default: $WANDB_AGENT_KILL_DELAY, else 30, as wandb agent).",
                 show_default=False),
]  # fmt: skip
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", envvar="IGNITE_SWEEP_STORE", show_default=False,
                 help="The local backend's store: a path or sqlite:///path (default $IGNITE_SWEEP_DIR/sweeps.db), or "
                 "postgresql://user:password@host:port/db shared by agents on many machines."),
]  # fmt: skip
SlotOpt = Annotated[str | None, typer.Option(hidden=True, help="Internal: this agent is one slot of a pool.")]
SweepIdArg = Annotated[str, typer.Argument(help="local/<id> or entity/project/<id>, as `create` printed.")]


def _use_store(store: str | None) -> None:
    """--store for this command and every agent it starts (pool slots read it from the environment)."""
    if store:
        os.environ["IGNITE_SWEEP_STORE"] = store


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _console(stderr: bool = False):  # noqa: ANN202 - rich is imported lazily
    from rich.console import Console

    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 160)


def _create(sweep_file: Path, backend: str, project: str | None, entity: str | None) -> str:
    from ignite_sweep.api import create

    created = create(sweep_file, backend, project, entity, warn=lambda message: _err(f"warning: {message}"))
    _err(f"backend: {created.backend} ({created.why})")
    sweep_id, config = created.sweep_id, created.config
    metric = config.get("metric") or {}
    params = ", ".join(config["parameters"])
    from ignite_sweep.sweepfile import is_program_sweep

    what = ""
    if is_program_sweep(config):
        what = f" of {config['program']}" if config.get("program") else f" of `{' '.join(map(str, config['command']))}`"
    typer.echo(f"created {config['method']} sweep{what} over {params}")
    if metric:
        typer.echo(f"metric: {metric['name']} ({metric.get('goal', 'minimize')})")
    if config.get("run_cap"):
        typer.echo(f"run_cap: {config['run_cap']}")
    typer.echo(f"start an agent: ignite-sweep agent {sweep_id}")
    typer.echo(sweep_id)
    return sweep_id


def _agent(
    sweep_id: str,
    count: int | None,
    max_consecutive_failures: int,
    gpus: str | None = None,
    per_gpu: int = 1,
    workers: int | None = None,
    stagger: float = 2.0,
    slot: str | None = None,
    kill_delay: int | None = None,
    fuse: int = 1,
) -> None:
    from ignite_sweep.backends import backend_for_sweep

    if kill_delay is not None:  # W&B's own variable: the W&B backend's agent and every pool slot read it too
        os.environ["WANDB_AGENT_KILL_DELAY"] = str(kill_delay)

    backend = backend_for_sweep(sweep_id)
    if gpus is not None or workers is not None:
        from ignite_sweep.execution.pool import plan_slots, run_pool

        slots = plan_slots(gpus, per_gpu, workers)
        sweep = backend.sweep(sweep_id)
        plan = ", ".join(f"{s.name}" + (f" (GPU {s.gpu})" if s.gpu else "") for s in slots)
        _err(f"{len(slots)} slots, {slots[0].threads} CPU threads each: {plan}")
        from ignite_sweep.report.tables import swept_names

        swept = swept_names(sweep, [])
        code = run_pool(
            sweep_id, slots, sweep.metric, sweep.goal, count, max_consecutive_failures, stagger, swept=swept,
            objectives=sweep.objectives, fuse=fuse,
        )
        raise typer.Exit(code)
    from ignite_sweep.execution.process import agents_on_this_machine, shared_cores_warning

    others, _registration = agents_on_this_machine()  # held open while this agent runs
    warning = shared_cores_warning(others)
    if warning:
        _err(f"warning: {warning}")
    result = backend.run_agent(sweep_id, count=count, max_consecutive_failures=max_consecutive_failures, slot=slot,
                               fuse=fuse)  # fmt: skip
    states = ", ".join(f"{n} {s}" for s, n in sorted(result.states.items()))
    _err(f"agent done: {result.runs} runs" + (f" ({states})" if states else "") + f"; {result.reason}")
    if result.reason == "interrupted":
        raise typer.Exit(130)


@app.command()
def create(
    sweep_file: Annotated[Path, typer.Argument(help="A W&B sweep YAML file.")],
    backend: BackendOpt = "auto",
    project: ProjectOpt = None,
    entity: EntityOpt = None,
    store: StoreOpt = None,
) -> None:
    """Validate a W&B sweep YAML and register the sweep. The last line printed is the sweep id alone."""
    _use_store(store)
    _create(sweep_file, backend, project, entity)


@app.command()
def agent(
    sweep_id: SweepIdArg,
    count: CountOpt = None,
    max_consecutive_failures: FailuresOpt = 5,
    gpus: GpusOpt = None,
    per_gpu: PerGpuOpt = 1,
    workers: WorkersOpt = None,
    stagger: StaggerOpt = 2.0,
    kill_delay: KillDelayOpt = None,
    fuse: FuseOpt = 1,
    store: StoreOpt = None,
    slot: SlotOpt = None,
) -> None:
    """Run the sweep's runs until it is exhausted, --count is reached, it is stopped, or Ctrl-C.

    Ctrl-C (or SIGTERM, SIGHUP) once stops gracefully: the running run ends through engine.terminate() and is
    recorded 'interrupted'; the next agent on the sweep runs it again first. Twice kills it. Interrupted and
    crashed runs are taken before new ones. With --gpus or --workers, one agent per slot with a live view;
    --count is then per slot.
    """
    _use_store(store)
    _agent(sweep_id, count, max_consecutive_failures, gpus, per_gpu, workers, stagger, slot, kill_delay, fuse)


@app.command("run")
def run_sweep(
    sweep_file: Annotated[Path, typer.Argument(help="A W&B sweep YAML file.")],
    backend: BackendOpt = "auto",
    project: ProjectOpt = None,
    entity: EntityOpt = None,
    count: CountOpt = None,
    max_consecutive_failures: FailuresOpt = 5,
    gpus: GpusOpt = None,
    per_gpu: PerGpuOpt = 1,
    workers: WorkersOpt = None,
    stagger: StaggerOpt = 2.0,
    kill_delay: KillDelayOpt = None,
    fuse: FuseOpt = 1,
    store: StoreOpt = None,
) -> None:
    """Create a sweep from SWEEP_FILE, then run an agent (or a pool of them) on it."""
    _use_store(store)
    sweep_id = _create(sweep_file, backend, project, entity)
    _agent(sweep_id, count, max_consecutive_failures, gpus, per_gpu, workers, stagger, kill_delay=kill_delay,
           fuse=fuse)  # fmt: skip


@app.command("ls")
def list_sweeps(store: StoreOpt = None) -> None:
    """List the sweeps in the local store (--store, default ./.ignite-sweep/sweeps.db), one line each."""
    _use_store(store)
    from ignite_sweep.backends.local import LocalBackend

    sweeps = LocalBackend().sweeps()
    if not sweeps:
        _err("no sweeps yet: ignite-sweep create sweeps/quickstart.yaml")
    for s in sweeps:
        metric = f"{s.metric} ({s.goal})" if s.metric else "-"
        typer.echo(f"{s.id}  {s.name:<20} {s.method:<6} {s.state:<8} {s.n_runs:>3} runs  {metric}")


@app.command()
def status(
    sweep_id: SweepIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: {sweep, runs}; a metrics: sweep adds "
                                          "sweep.pareto_front (run ids) and each run's pareto (true/false).")] = False,
    store: StoreOpt = None,
) -> None:
    """Table of the sweep's runs (id, state, params, metric, epochs, runtime, error), best run marked.

    A nested parameter is a column per swept leaf (model.hidden); a sweep without a metric has no metric column.
    A multi-objective sweep (metrics:) has a column per objective and marks each run on the Pareto front."""
    _use_store(store)
    from ignite_sweep.backends import backend_for_sweep
    from ignite_sweep.report.tables import front_of, status_json, status_table

    backend = backend_for_sweep(sweep_id)
    sweep, runs = backend.sweep(sweep_id), backend.runs(sweep_id)
    front = front_of(sweep, runs)
    best = backend.best_run(sweep_id) if front is None else None
    if as_json:
        typer.echo(json.dumps(status_json(sweep, runs, best, front), default=str))
    else:
        _console().print(status_table(sweep, runs, best, front))


@app.command()
def best(
    sweep_id: SweepIdArg,
    metric: Annotated[str | None, typer.Option("--metric", help="The best run on this one of the sweep's "
                                               "objectives (a metrics: sweep prints its Pareto front without it).",
                                               show_default=False)] = None,
    store: StoreOpt = None,
) -> None:
    """Print the best run's config as YAML, ready for `python -m ignite_sweep.train --config`.

    A multi-objective sweep (metrics:) prints each config on its Pareto front (YAML documents, --- between them),
    or with --metric NAME the best run on that objective."""
    _use_store(store)
    from ignite_sweep.backends import backend_for_sweep
    from ignite_sweep.errors import BackendError, ConfigError
    from ignite_sweep.report.tables import best_yaml, front_of, front_yaml

    backend = backend_for_sweep(sweep_id)
    sweep = backend.sweep(sweep_id)
    if not sweep.objectives:
        raise ConfigError(
            f"sweep '{sweep_id}' has no metric, so it has no best run: give the sweep YAML "
            "`metric: {name: <a value the runs log>, goal: maximize}` (or minimize) and create the sweep again"
        )
    names = [name for name, _ in sweep.objectives]
    if metric is not None and metric not in names:
        raise ConfigError(f"option '--metric': {metric!r} is not an objective of sweep '{sweep_id}'; allowed: "
                          f"{' | '.join(names)}")  # fmt: skip
    if sweep.multi_objective and metric is None:
        front = front_of(sweep, backend.runs(sweep_id)) or []
        if not front:
            raise BackendError(f"sweep '{sweep_id}' has no finished run with every objective ({', '.join(names)}) "
                               "yet, so no Pareto front")  # fmt: skip
        typer.echo(front_yaml(sweep, front), nl=False)
        return
    run = backend.best_run(sweep_id, metric=metric)
    if run is None:
        raise BackendError(f"sweep '{sweep_id}' has no run with its metric ({metric or sweep.metric}) yet")
    typer.echo(best_yaml(sweep, run, metric), nl=False)


def _state_command(name: str, doc: str, done: str) -> None:
    """`stop`, `cancel`, `pause`, `resume`: W&B's `wandb sweep --<name>`, on either backend."""

    def command(sweep_id: SweepIdArg, store: StoreOpt = None) -> None:
        from ignite_sweep.backends import backend_for_sweep

        _use_store(store)
        getattr(backend_for_sweep(sweep_id), name)(sweep_id)
        _err(done.format(id=sweep_id))

    command.__doc__ = doc
    app.command(name)(command)


_state_command("stop", "Stop a sweep (wandb sweep --stop): no new runs start; running runs finish.",
               "stopped {id}: no new runs; running runs finish")
_state_command("cancel", "Cancel a sweep (wandb sweep --cancel): no new runs; running runs stop now, gracefully "
               "(recorded stopped).", "canceled {id}: no new runs; running runs stop now")
_state_command("pause", "Pause a sweep (wandb sweep --pause): no new runs until `resume`; agents wait, running "
               "runs go on.", "paused {id}: no new runs until `ignite-sweep resume {id}`")
_state_command("resume", "Resume a paused sweep (wandb sweep --resume): agents take new runs again.",
               "resumed {id}")  # fmt: skip


@app.command()
def report(
    sweep_id: SweepIdArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    png: Annotated[Path | None, typer.Option(help="Also write a static PNG summary here.")] = None,
    store: StoreOpt = None,
) -> None:
    """Write an offline HTML report: parallel coordinates, parameter importance, optimisation history,
    validation curves and the run table (plotly embedded: no network needed to open it). A sweep without a
    metric gets the run table alone (parameters, states, runtimes), and no PNG."""
    _use_store(store)
    from ignite_sweep.backends import backend_for_sweep
    from ignite_sweep.report.html import collect, write_html, write_png

    backend = backend_for_sweep(sweep_id)
    sweep = backend.sweep(sweep_id)
    data = collect(sweep, backend.runs_with_history(sweep_id))
    note = "" if data.metric else " (runs only: the sweep has no metric to plot)"
    typer.echo(f"wrote {write_html(data, output)}{note}")
    if png is not None:
        typer.echo(f"wrote {write_png(data, png)}")


@app.command()
def sync(
    sweep_id: SweepIdArg,
    project: ProjectOpt = None,
    entity: EntityOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the wandb sync command over the run folders "
                                          "not uploaded yet; contact no server, register nothing.")] = False,
    store: StoreOpt = None,
) -> None:
    """Upload a local sweep to W&B: registers it as a W&B sweep (once; later syncs reuse it) and uploads its
    offline runs into it with wandb sync (each run file once; a run that logged more since goes again). Runs keep
    the sweep's name as their group and the tag local-sweep-<id>; if W&B refuses the sweep, they arrive grouped
    and tagged, with one warning. Needs a W&B login and network."""
    _use_store(store)
    import shlex

    from ignite_sweep.report.sync import sync as do_sync

    command = do_sync(sweep_id, project, entity, dry_run)
    if dry_run:
        typer.echo(f"would run: {shlex.join(command)}" if command else "nothing to upload: every run file was before")


def run(args: list[str] | None = None) -> int:
    """Run the command line and return its exit code; every error is one line on stderr, never a traceback:
    a user's mistake (IgniteSweepError) says what to change, a bug says where its traceback was written."""
    from ignite_sweep.errors import report_unexpected

    abort, usage, exit_ = _click_exceptions()
    try:
        code = app(args=args, prog_name="ignite-sweep", standalone_mode=False)
    except IgniteSweepError as exc:
        from ignite_sweep.faults import MachineFault

        _err(f"error: {exc.advice() if isinstance(exc, MachineFault) else exc}")  # a fault says what to do
        return 1
    except (*abort, KeyboardInterrupt):
        _err("aborted")
        return 130
    except usage as exc:  # a bad option or argument: one line, where to read more
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # the help itself
        else:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _err(f"error: {exc.format_message()}{hint}")
        return exc.exit_code
    except exit_ as exc:
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the backstop: a bug, shown as one line
        from ignite_sweep.faults import in_chain

        fault = in_chain(exc)  # not a bug: the machine's (a full or read-only disk under the store, say)
        _err(f"error: {fault.advice()}" if fault else report_unexpected(exc))
        return 1
    return code if isinstance(code, int) else 0


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(Abort, ClickException, Exit) classes: typer >= 0.2x raises its own and those of its vendored click
    (typer._click), older typer those of click itself (typer.Abort and typer.Exit are click's there)."""
    import importlib

    usage = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            usage.append(importlib.import_module(name).ClickException)
        except ImportError:
            continue
    return (typer.Abort,), tuple(usage), (typer.Exit,)


def main() -> None:
    _exit(run())


def _exit(code: int) -> None:
    """Exit without tearing the interpreter down: with torch and its compiler loaded that teardown alone
    took 0.6-1.4 s per agent. Everything is on disk by now (the store commits each change; wandb's
    service writes the runs); exit handlers (wandb's teardown, logging) still run, and output is flushed."""
    import atexit
    import contextlib

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (ignite-sweep ls | head)
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
