"""One training run: ``train(cfg, reporter) -> summary``, and ``python -m ignite_sweep.train``.

Reads top to bottom: data -> model -> optimizer -> Ignite trainer/evaluator -> handlers -> run.
Stops the one graceful way, ``trainer.terminate()``, whether the reason is a reporter (the local sweep
backend's hyperband), SIGTERM (W&B's agent stopping a run), Ctrl-C, early stopping or a NaN loss.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ignite_sweep.training.config import EVAL_METRICS, TrainConfig

Reporter = Callable[[dict[str, float]], bool]
"""Called with the metrics after every evaluation; returning True stops the run (status ``stopped``)."""


class StopSignal:
    """SIGTERM / SIGHUP / first Ctrl-C call ``on_stop`` (which asks the engine to terminate); a second Ctrl-C
    interrupts at once. Nothing runs per iteration: ``engine.terminate()`` only sets the flag that Ignite
    checks after each iteration.

    Installed inside another one (a training inside ``train_fused``, which trains several one after another), it
    starts with the stop the outer one already caught (``requested``: the training then stops as it starts), and
    hands back the one it caught itself, whenever it came: nothing between two trainings is lost."""

    _installed: list[StopSignal] = []  # the main thread's, innermost last

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self.requested: str | None = None
        self.on_stop = on_stop

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # wandb.agent runs functions in a thread; it stops them through its own channel
            return
        outer = StopSignal._installed[-1] if StopSignal._installed else None
        StopSignal._installed.append(self)
        try:
            with self._handlers():  # then the outer's stop: one caught until now went to the outer's handlers
                self.requested = self.requested or (outer.requested if outer is not None else None)
                yield self
        finally:
            StopSignal._installed.remove(self)
            if outer is not None:
                outer.requested = outer.requested or self.requested

    @contextmanager
    def _handlers(self) -> Iterator[None]:
        """The handlers while the block runs (execution.process.handlers_installed's twin: training may not import
        execution, tests/test_layout.py)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

        def handle(signum: int, _frame: Any) -> None:
            if signum == signal.SIGINT and self.requested:
                raise KeyboardInterrupt
            self.requested = signal.Signals(signum).name
            self.on_stop()

        for sig in previous:
            signal.signal(sig, handle)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def resolve_device(name: str) -> Any:
    import torch

    from ignite_sweep.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hyperparameter 'device': 'cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def build_optimizer(cfg: TrainConfig, model: Any) -> Any:
    import torch

    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def attach_lr_schedule(trainer: Any, optimizer: Any, cfg: TrainConfig, epoch_length: int) -> Any:
    """Per-iteration schedules through Ignite's param schedulers; returns the scheduler (None for "none")."""
    built = build_lr_schedule(optimizer, cfg, epoch_length)
    if built is None:
        return None
    scheduler, event = built
    trainer.add_event_handler(event, scheduler)
    return scheduler


def build_lr_schedule(optimizer: Any, cfg: TrainConfig, epoch_length: int) -> tuple[Any, Any] | None:
    """``cfg``'s schedule of ``optimizer``'s lr as an Ignite param scheduler and the trainer event it runs on
    (a fused group calls each member's itself); None for "none"."""
    from ignite.engine import Events
    from ignite.handlers import CosineAnnealingScheduler, LRScheduler, create_lr_scheduler_with_warmup
    from torch.optim.lr_scheduler import StepLR

    total = cfg.epochs * epoch_length
    if cfg.lr_schedule == "none":
        return None
    if cfg.lr_schedule == "step":
        scheduler = LRScheduler(StepLR(optimizer, step_size=cfg.lr_step_epochs * epoch_length, gamma=cfg.lr_gamma))
        return scheduler, Events.ITERATION_COMPLETED
    warmup = round(cfg.warmup_epochs * epoch_length) if cfg.lr_schedule == "warmup-cosine" else 0
    cosine = CosineAnnealingScheduler(
        optimizer, "lr", start_value=cfg.lr, end_value=0.0, cycle_size=max(total - warmup, 2) + 1
    )
    if warmup > 0:
        cosine = create_lr_scheduler_with_warmup(
            cosine, warmup_start_value=0.0, warmup_end_value=cfg.lr, warmup_duration=warmup
        )
    return cosine, Events.ITERATION_STARTED


class _Resumable:
    """What a checkpoint holds besides Ignite's objects: the best/last metrics, the shuffling generator and
    torch's RNG, so that a resumed run goes on as the interrupted one would have."""

    def __init__(self, state: dict[str, Any], batches: Any) -> None:
        self.state, self.batches = state, batches

    def state_dict(self) -> dict[str, Any]:
        import torch

        return {"best": dict(self.state["best"]), "last": dict(self.state["last"]),
                "shuffle": self.batches._generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}  # fmt: skip

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        import torch

        # RNG states are CPU byte tensors; torch.load(map_location=<the CUDA device>) has moved them there
        self.state["best"], self.state["last"] = dict(saved["best"]), dict(saved["last"])
        self.batches._generator.set_state(saved["shuffle"].cpu())
        torch.set_rng_state(saved["torch_rng"].cpu())
        cuda_rng = saved.get("cuda_rng")  # dropout on the GPU draws from these
        if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([state.cpu() for state in cuda_rng])


def _channels_last_batch(batch: Any, device: Any = None, non_blocking: bool = False) -> tuple[Any, Any]:
    """Ignite's ``_prepare_batch``, then 4-D inputs in channels-last memory format."""
    import torch
    from ignite.engine import _prepare_batch

    x, y = _prepare_batch(batch, device=device, non_blocking=non_blocking)
    return (x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x), y


def latest_checkpoint(folder: str | Path | None) -> Path | None:
    """The newest resume checkpoint in a run's checkpoint folder (``resume_checkpoint_<epoch>.pt``)."""
    if folder is None or not Path(folder).is_dir():
        return None
    found = sorted(Path(folder).glob("resume_checkpoint_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
    return found[-1] if found else None


def readable_checkpoint(folder: str | Path | None) -> Path | None:
    """The newest resume checkpoint if it is a whole ``torch.save`` archive (a zip with its central directory):
    what decides, before the W&B run starts, that a retry resumes its predecessor's W&B run."""
    import zipfile

    found = latest_checkpoint(folder)
    return found if found is not None and zipfile.is_zipfile(found) else None


def training_step(model: Any, optimizer: Any, loss_fn: Callable[..., Any], device: Any,
                  prepare_batch: Callable[..., Any] | None = None,
                  scaler: Any = None) -> Callable[[Any, Any], Any]:  # fmt: skip
    """The trainer's process function: Ignite's ``supervised_training_step`` (``_amp`` with a ``GradScaler``) less
    what a sweep's run does not use and pays for every iteration: ``model.train()`` (once per epoch instead),
    gradient accumulation, ``loss.item()`` (a wait for the device) and, without a ``prepare_batch``, the move of a
    batch that is on the device already (``TensorBatches``). Its output is the detached loss tensor; it becomes a
    number only where it is logged, shown or checked (every ``log_interval``, each epoch's end)."""
    import torch

    def update(_engine: Any, batch: Any) -> Any:
        optimizer.zero_grad()
        x, y = batch if prepare_batch is None else prepare_batch(batch, device=device, non_blocking=False)
        if scaler is None:
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        else:
            with torch.autocast("cuda"):
                loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss.detach()

    return update


def build_loss(name: str) -> Callable[..., Any]:
    """``nll`` (Ignite's MNIST example: the model returns log-probabilities), ``cross_entropy`` (logits), or the
    user's ``package.module:fn``."""
    import torch.nn.functional as F

    if name == "nll":
        return F.nll_loss
    if name == "cross_entropy":
        return F.cross_entropy
    from ignite_sweep.training.data import import_factory

    return import_factory(name, "loss")


def train(cfg: TrainConfig, reporter: Reporter | None = None, run: Any = None,
          checkpoint_dir: str | Path | None = None, resume_from: str | Path | None = None,
          on_resume: Callable[[int], None] | None = None,
          interrupted: Callable[[str | None], bool] | None = None) -> dict[str, Any]:  # fmt: skip
    """Train one model as ``cfg`` says, log it to W&B and return the run's summary.

    With ``checkpoint_dir``, an Ignite ``Checkpoint`` of trainer, model, optimizer, lr scheduler, metrics and RNG
    state is saved there after every epoch's evaluation (the last one kept). With ``resume_from`` (another run's
    checkpoint folder), training goes on after its last saved epoch (``on_resume(epoch)`` is told which); a
    checkpoint that cannot be read means a fresh start, with a warning.

    Inside a W&B agent the active run is reused; otherwise a run is started (and finished here).
    ``run`` may be a wandb run, or a Future of one started while the data loads (the local agent does so).
    The summary has ``status`` (finished | early-stopped | diverged | stopped | interrupted: stopped where
    ``interrupted(stopped_by)`` says so), ``stopped_by`` (``sweep``, or the signal: SIGTERM, SIGINT, SIGHUP),
    ``epochs_completed``,
    ``best/val/accuracy``, ``best/val/loss``, the last ``val/*`` metrics and ``train_time_s``.
    """
    import torch
    from ignite.engine import Engine, Events, _prepare_batch, create_supervised_evaluator
    from ignite.handlers import EarlyStopping, ModelCheckpoint, TerminateOnNan, Timer, global_step_from_engine
    from ignite.metrics import Accuracy, Loss

    from ignite_sweep.training.data import TensorBatches, load_dataset
    from ignite_sweep.training.models import build_model
    from ignite_sweep.training.wandb_logging import TrainEvents, attach_wandb, finish_run, start_run, train_scalars

    # Data, model, optimizer
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.seed, cfg.factory_kwargs("dataset")).to(device)
    torch.manual_seed(cfg.seed)  # the init whatever a dataset factory drew (or did not: a dataset this process cached)
    model = build_model(cfg.model, data.in_channels, data.image_size, data.num_classes, cfg.dropout,
                        cfg.factory_kwargs("model")).to(device)  # fmt: skip
    optimizer = build_optimizer(cfg, model)
    train_batches = TensorBatches(data.train_x, data.train_y, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_batches = TensorBatches(data.val_x, data.val_y, cfg.val_batch_size, shuffle=False)

    # Engines
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp else None
    criterion = build_loss(cfg.loss)
    # compile: the engines run the compiled module; checkpoints, W&B and the summary keep the model itself (same
    # parameters, the state_dict keys of the model). channels_last: the model and each batch, on CUDA.
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    stepped = torch.compile(model) if cfg.compile else model
    prepare = _channels_last_batch if channels_last else _prepare_batch
    # The batches are slices of tensors on the device already: the trainer moves nothing (channels_last reformats)
    trainer = Engine(training_step(stepped, optimizer, criterion, device, prepare if channels_last else None, scaler))
    if scaler is not None:
        trainer.state.scaler = scaler  # where Ignite's create_supervised_trainer keeps it
    # The step leaves the model's mode alone; the evaluator switches it to eval() and the trainer back each epoch.
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: model.train())
    evaluator = create_supervised_evaluator(
        stepped,
        metrics={"accuracy": Accuracy(), "loss": Loss(criterion)},
        device=device,
        amp_mode="amp" if amp else None,
        prepare_batch=prepare,
    )
    timer = Timer(average=False)
    timer.attach(trainer, start=Events.STARTED, resume=Events.EPOCH_STARTED, pause=Events.EPOCH_COMPLETED)
    scheduler = attach_lr_schedule(trainer, optimizer, cfg, len(train_batches))

    # Outcome bookkeeping: status and best metrics
    metric_key = cfg.metric.split("/", 1)[1]
    sign = 1.0 if EVAL_METRICS[cfg.metric] == "maximize" else -1.0
    state: dict[str, Any] = {"status": "finished", "evaluated_at": -1, "best": {}, "last": {}}

    def score(engine: Any) -> float:
        return sign * float(engine.state.metrics[metric_key])

    # Every log_interval iterations the loss and the gradient norm come back from the device, together (one wait);
    # W&B's train/* scalars, the divergence check and the progress bar read them there. A NaN or infinite loss is
    # caught within log_interval iterations (and at each epoch's end), not at every step. One handler runs per
    # iteration and tests the iteration itself (Ignite's event filter costs about 3 us per iteration more); what
    # reads the scalars hangs off the event it fires, TrainEvents.SCALARS.
    trainer.register_events(*TrainEvents)
    log_every = max(1, cfg.log_interval)
    every_log = Events.ITERATION_COMPLETED(every=log_every)

    @trainer.on(Events.ITERATION_COMPLETED)
    def fetch_scalars(engine: Any) -> None:
        if engine.state.iteration % log_every:
            return
        engine.state.train_scalars = train_scalars(engine.state.output, model, optimizer)
        engine.fire_event(TrainEvents.SCALARS)

    trainer.add_event_handler(
        TrainEvents.SCALARS, TerminateOnNan(output_transform=lambda _: trainer.state.train_scalars["loss"])
    )

    def diverged() -> bool:
        output = trainer.state.output
        return output is not None and not math.isfinite(float(output))

    def evaluate(_: Any) -> None:
        if diverged():
            trainer.terminate()
            return
        if state["evaluated_at"] == trainer.state.iteration:
            return
        state["evaluated_at"] = trainer.state.iteration
        evaluator.run(val_batches)

    trainer.add_event_handler(Events.EPOCH_COMPLETED, evaluate)
    trainer.add_event_handler(Events.COMPLETED, evaluate)  # a run stopped mid-epoch still gets its metrics

    # W&B handlers log first, then the handlers below read the same metrics
    run, owned = start_run(cfg, run.result() if hasattr(run, "result") else run)
    attach_wandb(trainer, evaluator, model, cfg.log_interval, run)

    @evaluator.on(Events.COMPLETED)
    def track(engine: Any) -> None:
        metrics = {f"val/{k}": float(v) for k, v in engine.state.metrics.items()}
        state["last"] = metrics
        best = state["best"]
        best["val/accuracy"] = max(best.get("val/accuracy", -math.inf), metrics["val/accuracy"])
        best["val/loss"] = min(best.get("val/loss", math.inf), metrics["val/loss"])

    best_dir = Path(run.dir).parent / "checkpoints" if run is not None else Path(tempfile.mkdtemp())
    checkpoint = ModelCheckpoint(
        str(best_dir),
        filename_prefix="best",
        n_saved=1,
        score_function=score,
        score_name=metric_key,
        global_step_transform=global_step_from_engine(trainer),
        require_empty=False,
    )
    evaluator.add_event_handler(Events.COMPLETED, checkpoint, {"model": model})

    if cfg.patience > 0:
        early = EarlyStopping(cfg.patience, score, trainer)
        evaluator.add_event_handler(Events.COMPLETED, early)

        @evaluator.on(Events.COMPLETED)
        def mark_early_stop(_: Any) -> None:
            if early.counter >= early.patience and state["status"] == "finished":
                state["status"] = "early-stopped"

    # Resume checkpoints: saved after each whole epoch's evaluation, before the sweep hears of it, so that an
    # evaluation the store has is one a retry can resume after.
    to_save: dict[str, Any] = {"trainer": trainer, "model": model, "optimizer": optimizer,
                               "bookkeeping": _Resumable(state, train_batches)}  # fmt: skip
    if scheduler is not None:
        to_save["lr_scheduler"] = scheduler
    if scaler is not None:
        to_save["amp_scaler"] = scaler
    if cfg.patience > 0:
        to_save["early_stopping"] = early
    resumed_epoch = None
    source = latest_checkpoint(resume_from)
    if source is not None:
        from ignite.handlers import Checkpoint

        try:
            Checkpoint.load_objects(to_load=to_save, checkpoint=torch.load(source, map_location=device,
                                                                          weights_only=False))  # fmt: skip
            resumed_epoch = trainer.state.epoch
            if checkpoint_dir is not None:  # this run's folder starts with it: a retry of this run resumes there too
                import shutil

                Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, Path(checkpoint_dir) / source.name)
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file: start again rather than fail the run
            print(f"warning: checkpoint {source} could not be read ({type(exc).__name__}: {exc}); "
                  "starting from epoch 0", file=sys.stderr)  # fmt: skip
        if resumed_epoch is not None and on_resume is not None:
            on_resume(resumed_epoch)
    if checkpoint_dir is not None:
        from ignite.handlers import Checkpoint, DiskSaver

        saver = Checkpoint(to_save, DiskSaver(str(checkpoint_dir), require_empty=False, create_dir=True),
                           filename_prefix="resume", n_saved=1,
                           global_step_transform=lambda *_: trainer.state.epoch)  # fmt: skip

        @evaluator.on(Events.COMPLETED)
        def save_for_resume(engine: Any) -> None:
            if trainer.state.iteration % len(train_batches) == 0 and not diverged():  # whole epochs only
                saver(engine)

    if reporter is not None:

        @evaluator.on(Events.COMPLETED)
        def report(engine: Any) -> None:
            metrics = {
                **state["last"],
                **{f"best/{k}": v for k, v in state["best"].items()},
                "epoch": trainer.state.epoch,
                "iteration": trainer.state.iteration,
            }
            if reporter(metrics) and state["status"] == "finished":
                state["status"], state["stopped_by"] = "stopped", "sweep"
                trainer.terminate()

    if sys.stderr.isatty():
        from ignite.handlers import ProgressBar

        # ProgressBar takes Ignite's own events only: the same iterations as SCALARS, after fetch_scalars
        ProgressBar(persist=False).attach(
            trainer, output_transform=lambda _: {"loss": trainer.state.train_scalars["loss"]}, event_name=every_log
        )

    def request_stop() -> None:  # SIGTERM (W&B's agent stopping a run), SIGHUP or Ctrl-C
        if state["status"] == "finished":
            state["status"], state["stopped_by"] = "stopped", stop.requested
        trainer.terminate()

    stop = StopSignal(request_stop)

    @trainer.on(Events.STARTED)
    def stopped_before(_engine: Any) -> None:  # a stop caught before the trainer started: it ends where it starts,
        if stop.requested:  # with nothing new to evaluate or report
            state["evaluated_at"] = trainer.state.iteration
            request_stop()

    summary: dict[str, Any] = {}
    started = time.perf_counter()
    # The handlers stay until the summary is written: a stop that comes while the run ends (W&B's agent sends
    # a SIGTERM after a Ctrl-C reached the run) changes nothing, where the default action would kill the run
    # before its end is recorded.
    with stop.installed():
        try:
            trainer.run(train_batches, max_epochs=cfg.epochs)
        except BaseException:
            state["status"] = "failed"
            raise
        finally:
            stop.on_stop = lambda: None  # the run has ended: a stop from now on has nothing left to stop
            if diverged() and state["status"] != "failed":
                state["status"] = "diverged"
            all_done = trainer.state.iteration >= cfg.epochs * len(train_batches)
            if all_done and state["status"] in ("stopped", "early-stopped"):
                state["status"] = "finished"  # the stop came after its last epoch: nothing was cut short
            if state["status"] == "stopped" and interrupted is not None and interrupted(state.get("stopped_by")):
                state["status"] = "interrupted"
            train_time = timer.value()
            summary = {
                "status": state["status"],
                "stopped_by": state.get("stopped_by"),  # what stopped it first: "sweep" (the reporter) or a signal
                "epochs_completed": trainer.state.iteration // len(train_batches),
                **{f"best/{k}": v for k, v in state["best"].items()},
                **state["last"],
                "iterations": trainer.state.iteration,
                "resumed_epoch": resumed_epoch,
                "train_time_s": train_time,
                "run_time_s": time.perf_counter() - started,  # training and evaluation
                "samples_per_s": (trainer.state.iteration - (resumed_epoch or 0) * len(train_batches))
                * cfg.batch_size / train_time if train_time else 0.0,
            }
            best_file = Path(checkpoint.last_checkpoint) if checkpoint.last_checkpoint else None
            summary["checkpoint"] = str(best_file) if best_file else None
            finish_run(run, summary, best_file, owned)
    return summary


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str]) -> dict[str, Any]:
    """``--key=value`` / ``--key value`` (W&B's ``${args}``) and ``--config FILE.yaml`` into a flat dict."""
    import yaml

    from ignite_sweep.errors import ConfigError

    values: dict[str, Any] = {}
    cli: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"argument '{arg}': expected --key=value")
        key, eq, raw = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                raw, i = argv[i + 1], i + 1
            else:
                raw = "true"  # a bare flag: --nesterov
        i += 1
        if key == "config":
            values.update(load_config_file(raw))
            continue
        try:
            cli[key] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            cli[key] = raw
    values.update(cli)  # the command line wins over --config
    return values


def load_config_file(path: str) -> dict[str, Any]:
    import yaml

    from ignite_sweep.errors import ConfigError

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror}") from None
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of hyperparameter: value")
    # Accept W&B's config-defaults form {key: {value: v}} as well as the plain {key: v}.
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in loaded.items()}


def usage() -> str:
    import dataclasses

    from ignite_sweep.training.config import HELP

    lines = [
        "usage: python -m ignite_sweep.train [--config FILE.yaml] [--key=value ...]",
        "",
        "One training run. Keys as in a sweep YAML's parameters; the command line overrides --config.",
        "",
        "hyperparameters (default):",
    ]
    for f in dataclasses.fields(TrainConfig):
        if f.name == "factory_args":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"  --{f.name:<16} {HELP[f.name]} (default: {default})")
    lines.append(f"  --{'<other>':<16} a parameter of a user model/dataset factory, passed to it by name")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ignite_sweep.errors import IgniteSweepError, report_unexpected

    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        try:
            print(usage(), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    try:
        cfg = TrainConfig.from_dict(parse_args(args))
        summary = train(cfg)
    except IgniteSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the backstop: a bug (or a user factory's error), one line
        print(report_unexpected(exc), file=sys.stderr)
        return 1
    metrics = ", ".join(f"{k}={summary[k]:.4f}" for k in ("val/accuracy", "val/loss") if summary.get(k) is not None)
    print(f"{summary['status']} after {summary['epochs_completed']} epochs: {metrics}")
    return 0 if summary["status"] != "diverged" else 2


if __name__ == "__main__":
    sys.exit(main())
