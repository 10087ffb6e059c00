"""Fused runs: K runs of one sweep trained together as one vmapped model, each still a run of its own.

``can_fuse(cfgs)`` groups the configs that may train together and says, for the rest, why not (one line each);
``train_fused(cfgs, ...)`` trains each group as ONE Ignite engine over stacked parameters
(``torch.func.stack_module_state`` + ``functional_call`` + ``vmap(grad_and_value)``) and the rest with ``train()``,
and returns one summary per config, in order, with the keys ``train()`` returns.

A member trains as its run would alone (same init, same batches, same dropout masks, same update), so:

- Shared by a group (``GROUP_KEYS``): everything that shapes the model or the batches: dataset, model and its
  factory arguments, batch sizes, loss, optimizer type, device, log_interval, ``seed`` (train() seeds the weights and
  the batch order with it: members with one seed have one init and one batch order, so one batch feeds them all) and
  ``dropout`` (vmap draws one mask for all members, ``randomness="same"``: the mask each would draw alone, only if
  they share the seed and the rate; a mask per rate cannot be drawn the way ``F.dropout`` draws it alone).
- Per member: lr, momentum, weight_decay, nesterov, the lr schedule and its knobs, epochs, patience, metric.
  The update is torch.optim's single-tensor SGD / Adam / AdamW (what torch.optim runs on the CPU) written over the
  stacked tensors with per-member hyperparameter columns; the lr comes from each member's own torch.optim optimizer,
  moved by its own Ignite scheduler, and that optimizer receives the member's state for its checkpoints (which an
  unfused retry resumes).
- Not fused, with a reason: compile, amp and channels_last on CUDA, a model or loss ``torch.func`` cannot trace.

A member leaves the group when it diverges (a NaN or infinite loss: ``diverged``), its reporter stops it, early
stopping ends it, or its epochs are done; its slice is dropped from the stacked tensors, so the rest run as a
smaller group. Each member logs to its own wandb run the names ``train()`` logs, at the same steps. A group that runs
out of device memory (K too large for the GPU) is no failure: before any member logged or reported, its members train
alone, one after another, as they would have unfused; later, those still training end ``interrupted`` (run again
first; their summaries' ``fused_out_of_memory`` tells the agent to claim smaller groups).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite_sweep.training.config import EVAL_METRICS, TrainConfig
from ignite_sweep.training.stacked import Stack
from ignite_sweep.training.train import Reporter

GROUP_KEYS = ("dataset", "model", "factory_args", "batch_size", "val_batch_size", "loss", "optimizer", "device",
              "seed", "dropout", "log_interval", "data_dir", "download", "amp", "compile", "channels_last")  # fmt: skip
"""What the members of one group share (see the module's docstring for why each)."""


OUT_OF_MEMORY = "its fused group ran out of device memory"
"""How a member that its group's running out of device memory interrupted says why (its ``stopped_by``)."""


def group_key(cfg: TrainConfig) -> tuple[Any, ...]:
    return tuple(repr(getattr(cfg, k)) for k in GROUP_KEYS)


def static_reason(cfg: TrainConfig) -> str | None:
    """Why ``cfg`` cannot be fused whatever it is grouped with; None when it may be."""
    if cfg.compile:
        return "compile: torch.compile is not fused (the run trains alone)"
    if (cfg.amp or cfg.channels_last) and cfg.device != "cpu":
        import torch

        if torch.cuda.is_available():  # on the CPU train() ignores both
            return "amp / channels_last on CUDA are not fused (the run trains alone)"
    return None


def can_fuse(cfgs: list[TrainConfig], probe: bool = True) -> tuple[list[list[int]], dict[int, str]]:
    """Which configs train together: ``(groups, reasons)``, groups of 2 or more indices into ``cfgs`` and, for every
    other index, one line saying why it trains alone. ``probe`` also traces each group's model and loss through
    ``vmap(grad_and_value)`` on two samples (loads the data: do it in the process that trains; without it, only
    the hyperparameters are compared, no torch computation)."""
    reasons: dict[int, str] = {}
    by_key: dict[tuple[Any, ...], list[int]] = {}
    for i, cfg in enumerate(cfgs):
        reason = static_reason(cfg)
        if reason is not None:
            reasons[i] = reason
        else:
            by_key.setdefault(group_key(cfg), []).append(i)
    groups = []
    for members in by_key.values():
        if len(members) == 1:
            (i,) = members
            reasons[i] = _alone_reason(cfgs, i, [g[0] for g in by_key.values() if g != members])
            continue
        failure = trace_failure(cfgs[members[0]]) if probe else None
        if failure is None:
            groups.append(members)
        else:
            reasons.update({i: failure for i in members})
    return groups, dict(sorted(reasons.items()))


def _alone_reason(cfgs: list[TrainConfig], i: int, others: list[int]) -> str:
    if not others:
        return "no other run to fuse with"

    def differ_from(j: int) -> list[str]:
        return [k for k in GROUP_KEYS if getattr(cfgs[i], k) != getattr(cfgs[j], k)]

    other = cfgs[min(others, key=lambda j: len(differ_from(j)))]  # the closest group
    differ = [k for k in GROUP_KEYS if getattr(cfgs[i], k) != getattr(other, k)]
    shown = ", ".join(f"{k} {getattr(cfgs[i], k)!r} (not {getattr(other, k)!r})" for k in differ[:3])
    return f"different architecture-shaping hyperparameters: {shown}"


def trace_failure(cfg: TrainConfig) -> str | None:
    """None when two copies of ``cfg``'s model and loss go through ``vmap(grad_and_value)`` (the fused step) and a
    vmapped evaluation; else why not, one line. The caller's RNG state is left as it was."""
    import torch

    from ignite_sweep.training.train import resolve_device

    try:
        device = resolve_device(cfg.device)
        # only the group's device: fork_rng's default sets up CUDA on every GPU (and warns) where several are visible
        devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []  # fmt: skip
        with torch.random.fork_rng(devices=devices):
            group = Stack(cfg, [cfg, cfg], _load(cfg))
            x, y = group.data.train_x[:2], group.data.train_y[:2]
            losses, _ = group.forward_backward(x, y)
            group.evaluate_batch(x, y)
            if losses.shape != (2,):
                return f"loss '{cfg.loss}' does not return one number per member under vmap"
    except Exception as exc:  # noqa: BLE001 - whatever torch.func refuses, the run trains alone
        return f"model '{cfg.model}' cannot be traced by torch.func ({type(exc).__name__}: {_first_line(exc)})"
    return None


def warm_up() -> bool:
    """Pay once, in the agent, what the first fused step costs a process (torch.func's first vmapped forward,
    backward, optimizer step and evaluation: about 2 s on this CPU), so that every forked group starts warm: a tiny
    group of the built-in MLP on a few random images. No dataset is read; the RNG is left as it was. On one thread:
    a process that forks must not have started torch's OpenMP pool (a forked child that enters it hangs).

    Not where a GPU may be visible (``gpu_may_be_visible``): autograd's first backward counts the CUDA devices, which
    initialises the CUDA driver in the agent, and then CUDA fails in every forked group ("CUDA error: initialization
    error", seen on an H200); there each group pays its own warm-up. Returns whether it warmed up."""
    if gpu_may_be_visible():
        return False
    import types

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _warm_up(torch, types)
    finally:
        torch.set_num_threads(threads)
    return True


def gpu_may_be_visible() -> bool:
    """Whether CUDA could find a GPU in this process, asked without initialising CUDA (which a process that forks
    must not do): torch built with CUDA (or ROCm), ``CUDA_VISIBLE_DEVICES`` not empty, and a GPU driver here: the
    CUDA driver library loads (without it CUDA cannot start; loading it starts nothing), NVIDIA's device node or
    nvidia-smi (also where the library has another name), or ROCm's ``/dev/kfd``."""
    import ctypes
    import os
    import shutil

    import torch

    if not torch.backends.cuda.is_built() or os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    if os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None:
        return True
    if torch.version.hip is not None and os.path.exists("/dev/kfd"):
        return True
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _warm_up(torch: Any, types: Any) -> None:
    # devices=[]: fork_rng's default saves every CUDA device's RNG state, which initialises CUDA
    with torch.random.fork_rng(devices=[]):
        x, y = torch.rand(4, 1, 8, 8), torch.arange(4) % 10
        data = types.SimpleNamespace(train_x=x, in_channels=1, image_size=(8, 8), num_classes=10)
        for optimizer in ("sgd", "adam"):
            cfgs = [TrainConfig.from_dict({"model": "mlp", "optimizer": optimizer, "momentum": 0.9})] * 2
            stack = Stack(cfgs[0], cfgs, data)
            stack.step(x, y)
            stack.evaluate_batch(x, y)
            stack.grad_norms()


def _load(cfg: TrainConfig) -> Any:
    """The group's data, loaded as train() loads it: after ``torch.manual_seed(seed)`` (a user's dataset factory that
    draws from torch's RNG draws what it would alone)."""
    import torch

    from ignite_sweep.training.data import load_dataset
    from ignite_sweep.training.train import resolve_device

    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.seed, cfg.factory_kwargs("dataset"))
    return data.to(resolve_device(cfg.device))


class _MemberState:
    """One member's bookkeeping: what train() keeps in its ``state`` dict and its W&B run."""

    def __init__(self, index: int, cfg: TrainConfig, reporter: Reporter | None, run: Any, owned: bool) -> None:
        self.index, self.cfg, self.reporter, self.run, self.owned = index, cfg, reporter, run, owned
        self.state: dict[str, Any] = {"status": "finished", "evaluated_at": -1, "best": {}, "last": {}}
        self.leaving = False
        self.summary: dict[str, Any] | None = None
        metric_key = cfg.metric.split("/", 1)[1]
        self.metric_key, self.sign = metric_key, 1.0 if EVAL_METRICS[cfg.metric] == "maximize" else -1.0

    def score(self, _engine: Any = None) -> float:
        return self.sign * float(self.state["last"][self.cfg.metric])


def train_fused(cfgs: list[TrainConfig], reporters: list[Reporter | None] | None = None, runs: list[Any] | None = None,
                checkpoint_dirs: list[str | Path | None] | None = None,
                interrupted: Callable[[str | None], bool] | None = None,
                on_alone: Callable[[int, str], None] | None = None,
                on_finished: Callable[[int, dict[str, Any]], None] | None = None,
                resume_from: list[str | Path | None] | None = None,
                on_resume: list[Callable[[int], None] | None] | None = None,
                on_failed: Callable[[int, Exception], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Train ``cfgs``: each group ``can_fuse`` finds as one fused engine, every other config with ``train()`` (after
    ``on_alone(index, reason)``, or a line on stderr). ``reporters[i]``, ``runs[i]`` (a wandb run or a Future of one),
    ``checkpoint_dirs[i]``, ``resume_from[i]`` and ``on_resume[i]`` are config i's, as train() takes them (a config
    that resumes a checkpoint trains alone); ``interrupted`` as train()'s. ``on_finished(index, summary)`` is called as
    each config's run ends (a member that leaves its group early, while the others train on). Returns one summary per
    config, in order (None for one that failed).

    A group or a run alone that raises fails its own runs only: ``on_failed(index, exception)`` for each of them (it
    may raise, to stop everything: a machine fault), and the others train; without ``on_failed`` the exception goes
    up. A stop (SIGTERM, SIGHUP, Ctrl-C) ends what trains and every run not started yet: those end ``stopped`` (or
    ``interrupted``, as ``interrupted`` says) after 0 epochs."""
    import sys

    from ignite_sweep.training.train import StopSignal, readable_checkpoint, train

    n = len(cfgs)
    reporters, runs = reporters or [None] * n, runs or [None] * n
    checkpoint_dirs, resume_from = checkpoint_dirs or [None] * n, resume_from or [None] * n
    on_resume = on_resume or [None] * n
    between = StopSignal(lambda: None)  # a stop before, between or after the trainings (each installs its own, inside)
    with between.installed():
        resuming = {i: "it resumes its predecessor's checkpoint (a retry trains alone)" for i in range(n) if
                    resume_from[i] is not None and readable_checkpoint(Path(resume_from[i])) is not None}  # fmt: skip
        rest = [i for i in range(n) if i not in resuming]
        groups, reasons = can_fuse([cfgs[i] for i in rest])
        groups = [[rest[j] for j in group] for group in groups]
        reasons = dict(sorted({**{rest[j]: why for j, why in reasons.items()}, **resuming}.items()))
        summaries: dict[int, dict[str, Any] | None] = {}

        too_big: dict[int, int] = {}  # config -> the size of its group that ran out of device memory

        def ended(i: int, summary: dict[str, Any]) -> None:
            if i in too_big:  # what the agent reads to claim smaller groups from now on
                summary["fused_out_of_memory"] = too_big[i]
            summaries[i] = summary
            if on_finished is not None:
                on_finished(i, summary)

        def failed(indices: list[int], exc: BaseException) -> None:
            if on_failed is None or not isinstance(exc, Exception):
                raise exc
            for i in indices:
                summaries[i] = None
                on_failed(i, exc)

        ran_out = False
        for group in groups:
            if between.requested:
                break
            try:
                _train_group([cfgs[i] for i in group], [reporters[i] for i in group], [runs[i] for i in group],
                             [checkpoint_dirs[i] for i in group], interrupted,
                             on_finished=lambda j, summary, group=group: ended(group[j], summary))  # fmt: skip
            except _GroupOutOfMemory as oom:  # never a failure because of fusion: each trains as it would alone
                reasons.update({i: f"its group of {len(group)} ran out of device memory ({oom})" for i in group})
                too_big.update({i: len(group) for i in group})
                ran_out = True
            except _GroupFailed as failure:
                failed([group[j] for j in failure.positions], failure.__cause__ or failure)
            except Exception as exc:  # noqa: BLE001 - while the group was made (its data, a wandb run, a schedule):
                failed([i for i in group if i not in summaries], exc)  # its own runs fail, the others train
        if ran_out or any(s and s.get("fused_out_of_memory") for s in summaries.values()):
            _free_device_memory()
        for i, reason in sorted(reasons.items()):
            if between.requested:
                break
            if on_alone is not None:
                on_alone(i, reason)
            else:
                print(f"run {i} trains alone: {reason}", file=sys.stderr)
            try:
                summary = train(cfgs[i], reporter=reporters[i], run=runs[i], checkpoint_dir=checkpoint_dirs[i],
                                resume_from=resume_from[i], on_resume=on_resume[i],
                                interrupted=interrupted)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - that run's failure, handed to on_failed (which may raise)
                failed([i], exc)
                continue
            ended(i, summary)
        for i in range(n):  # never started: a stop came first
            if i not in summaries:
                stopped = "interrupted" if interrupted is not None and interrupted(between.requested) else "stopped"
                ended(i, {"status": stopped, "stopped_by": between.requested, "epochs_completed": 0,
                          "iterations": 0, "resumed_epoch": None, "train_time_s": 0.0, "run_time_s": 0.0,
                          "samples_per_s": 0.0, "checkpoint": None})  # fmt: skip
    _free_device_memory()  # before the agent is released: the free memory it reads for its next claim is true
    return [summaries.get(i) or {} for i in range(n)]


class _GroupFailed(Exception):  # noqa: N818 - a signal between two functions of this module, not an error
    """A fused group raised (its ``__cause__``): the members at ``positions`` had not ended."""

    def __init__(self, positions: list[int]) -> None:
        super().__init__(f"{len(positions)} members had not ended")
        self.positions = positions


class _GroupOutOfMemory(Exception):  # noqa: N818 - a signal between two functions of this module, not an error
    """A fused group ran out of device memory before any member logged or reported: its members train alone."""


class _MemoryMeter:
    """On a CUDA device, what a group needs: the memory in use before it was stacked (the data, on the device) and
    the peak above that, per member (its parameters, gradients, optimizer state and activations scale with K)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device, self.cuda = device, torch.cuda if device.type == "cuda" else None
        if self.cuda is not None:
            self.base = self.cuda.memory_allocated(device)
            self.cuda.reset_peak_memory_stats(device)

    def measure(self, members: int) -> dict[str, int] | None:
        if self.cuda is None:
            return None
        peak = self.cuda.max_memory_allocated(self.device)
        index = self.device.index if self.device.index is not None else self.cuda.current_device()
        return {"device_index": index, "members": members, "base_bytes": self.base,
                "per_member_bytes": max(0, peak - self.base) // members}  # fmt: skip


def _first_line(exc: BaseException) -> str:
    """An exception's message as one line of a reason (at most 200 characters)."""
    return str(exc).splitlines()[0][:200] if str(exc) else ""


def _out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _free_device_memory() -> None:
    import gc

    import torch

    if torch.cuda.is_initialized():
        gc.collect()  # the failed group's tensors may sit in a reference cycle (its frames, its exception)
        torch.cuda.empty_cache()


def _train_group(cfgs: list[TrainConfig], reporters: list[Reporter | None], runs: list[Any],
                 checkpoint_dirs: list[str | Path | None], interrupted: Callable[[str | None], bool] | None,
                 on_finished: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One fused group (``can_fuse`` said so): one trainer Engine, one evaluator Engine, K wandb runs;
    ``on_finished(position, summary)`` as each member ends."""
    import tempfile

    import torch
    from ignite.engine import Engine, Events
    from ignite.handlers import Checkpoint, DiskSaver, EarlyStopping, ModelCheckpoint, Timer

    from ignite_sweep.training.data import TensorBatches
    from ignite_sweep.training.train import StopSignal, _Resumable, build_lr_schedule
    from ignite_sweep.training.wandb_logging import finish_run, start_run, tensor_histograms

    shared = cfgs[0]
    data = _load(shared)
    meter = _MemoryMeter(data.train_x.device)  # from here: what the group adds to the device's memory
    try:
        stack = Stack(shared, cfgs, data)  # seeds and builds each member as train() does: the RNG is now train()'s
    except Exception as exc:
        if _out_of_memory(exc):  # K models do not fit where one does: each trains alone
            raise _GroupOutOfMemory(_first_line(exc)) from None
        raise
    train_batches = TensorBatches(data.train_x, data.train_y, shared.batch_size, shuffle=True, seed=shared.seed)
    val_batches = TensorBatches(data.val_x, data.val_y, shared.val_batch_size, shuffle=False)
    epoch_length = len(train_batches)
    members = []
    for i, cfg in enumerate(cfgs):
        run, owned = start_run(cfg, runs[i].result() if hasattr(runs[i], "result") else runs[i], alone=False)
        members.append(_MemberState(i, cfg, reporters[i], run, owned))
    active = list(members)  # position p in the stack is active[p]

    def step(_engine: Any, batch: Any) -> Any:
        return stack.step(*batch)

    trainer = Engine(step)
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: stack.skeleton.train())
    timer = Timer(average=False)
    timer.attach(trainer, start=Events.STARTED, resume=Events.EPOCH_STARTED, pause=Events.EPOCH_COMPLETED)

    # Per member: its lr schedule (on its own torch.optim optimizer), early stopping, checkpoints
    for m, optimizer in zip(members, stack.optimizers, strict=True):
        m.schedule = build_lr_schedule(optimizer, m.cfg, epoch_length)
        m.stopper = Engine(lambda *_: None)  # what EarlyStopping terminates; its flag says the member ends
        m.early = EarlyStopping(m.cfg.patience, m.score, m.stopper) if m.cfg.patience > 0 else None
        best_dir = Path(m.run.dir).parent / "checkpoints" if m.run is not None else Path(tempfile.mkdtemp())
        m.checkpoint = ModelCheckpoint(str(best_dir), filename_prefix="best", n_saved=1, score_function=m.score,
                                       score_name=m.metric_key, global_step_transform=lambda *_: trainer.state.epoch,
                                       require_empty=False)  # fmt: skip
        m.saver = None
        if checkpoint_dirs[m.index] is not None:
            to_save = {"trainer": m.stopper, "model": stack.models[m.index], "optimizer": optimizer,
                       "bookkeeping": _Resumable(m.state, train_batches)}  # fmt: skip
            if m.schedule is not None:
                to_save["lr_scheduler"] = m.schedule[0]
            if m.early is not None:
                to_save["early_stopping"] = m.early
            disk = DiskSaver(str(checkpoint_dirs[m.index]), require_empty=False, create_dir=True)
            m.saver = Checkpoint(to_save, disk, filename_prefix="resume", n_saved=1,
                                 global_step_transform=lambda *_: trainer.state.epoch)  # fmt: skip

    def run_schedules(event: Any) -> Callable[[Any], None]:
        def handler(engine: Any) -> None:
            for m in active:
                if m.schedule is not None and m.schedule[1] == event:
                    m.schedule[0](engine)

        return handler

    trainer.add_event_handler(Events.ITERATION_STARTED, run_schedules(Events.ITERATION_STARTED))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, run_schedules(Events.ITERATION_COMPLETED))

    log_every = max(1, shared.log_interval)
    hist_every = 10 * log_every
    told = [False]  # whether any member logged to W&B or reported to the sweep yet

    @trainer.on(Events.ITERATION_COMPLETED)
    def log_scalars(engine: Any) -> None:  # train()'s fetch_scalars + TerminateOnNan + log_train, per member
        it = engine.state.iteration
        if it % log_every:
            return
        losses, norms = torch.stack([engine.state.output.float(), stack.grad_norms().float()]).tolist()
        for p, m in enumerate(active):
            row = {"train/loss": losses[p], "train/lr": stack.optimizers[p].param_groups[0]["lr"],
                   "train/grad_norm": norms[p]}  # fmt: skip
            if it % hist_every == 0:
                row.update(tensor_histograms({k: v[p] for k, v in stack.params.items()},
                                             {k: v[p] for k, v in stack.grads.items()}))  # fmt: skip
            m.run.log(row, step=it)
            told[0] = True
            if not math.isfinite(losses[p]):
                m.state["status"], m.leaving = "diverged", True
        leave(engine)

    def evaluate(members_now: list[Any]) -> None:
        """One pass over the validation batches for the active members, then each one's handlers as train()'s
        evaluator runs them: W&B, best metrics, best checkpoint, early stopping, resume checkpoint, reporter."""
        positions = [active.index(m) for m in members_now]
        correct = torch.zeros(len(active), dtype=torch.long, device=stack.device)
        loss_sum = torch.zeros(len(active), device=stack.device)
        seen = 0
        stack.skeleton.eval()
        for x, y in val_batches:
            right, losses = stack.evaluate_batch(x, y)
            correct += right
            loss_sum += losses
            seen += len(y)
        stack.skeleton.train()
        accuracy, loss = (correct.double() / seen).tolist(), (loss_sum.double() / seen).tolist()
        it = trainer.state.iteration
        for p in positions:
            m = active[p]
            m.state["evaluated_at"] = it
            metrics = {"val/loss": loss[p], "val/accuracy": accuracy[p]}
            told[0] = True
            m.run.log({**metrics, "epoch": trainer.state.epoch}, step=it)
            m.state["last"] = metrics
            best = m.state["best"]
            best["val/accuracy"] = max(best.get("val/accuracy", -math.inf), metrics["val/accuracy"])
            best["val/loss"] = min(best.get("val/loss", math.inf), metrics["val/loss"])
            stack.materialize(p)
            m.checkpoint(trainer, {"model": stack.models[p]})
            if m.early is not None:
                m.early(trainer)
                if m.stopper.should_terminate and m.state["status"] == "finished":
                    m.state["status"], m.leaving = "early-stopped", True
            if m.saver is not None and it % epoch_length == 0:
                m.stopper.state.iteration, m.stopper.state.epoch_length = it, epoch_length
                m.stopper.state.max_epochs, m.stopper.state.epoch = m.cfg.epochs, it // epoch_length
                m.saver(trainer)
            if m.reporter is not None:
                report = {**metrics, **{f"best/{k}": v for k, v in best.items()}, "epoch": trainer.state.epoch,
                          "iteration": it}  # fmt: skip
                if m.reporter(report) and m.state["status"] == "finished":
                    m.state["status"], m.state["stopped_by"], m.leaving = "stopped", "sweep", True
            if trainer.state.epoch >= m.cfg.epochs and it % epoch_length == 0:
                m.leaving = True

    @trainer.on(Events.EPOCH_COMPLETED)
    def end_of_epoch(engine: Any) -> None:
        finite = torch.isfinite(engine.state.output).tolist()
        for m, ok in zip(active, finite, strict=True):
            if not ok:
                m.state["status"], m.leaving = "diverged", True
        leave(engine)
        if active:
            evaluate(list(active))
            leave(engine)

    def leave(engine: Any) -> None:
        gone = [m for m in active if m.leaving]
        if not gone:
            return
        stay = [p for p, m in enumerate(active) if not m.leaving]
        for m in gone:
            finish(m, engine.state.iteration)
        if stay:
            stack.keep(stay)
            engine.state.output = engine.state.output[torch.tensor(stay, device=stack.device)]
        active[:] = [active[p] for p in stay]
        if not active:
            engine.terminate()

    def finish(m: _MemberState, iteration: int) -> None:
        """The member's summary (train()'s keys) and the end of its wandb run."""
        state = m.state
        if iteration >= m.cfg.epochs * epoch_length and state["status"] in ("stopped", "early-stopped"):
            state["status"] = "finished"  # the stop came after its last epoch: nothing was cut short
        if state["status"] == "stopped" and interrupted is not None and interrupted(state.get("stopped_by")):
            state["status"] = "interrupted"
        train_time = timer.value()
        m.summary = {
            "status": state["status"], "stopped_by": state.get("stopped_by"),
            "epochs_completed": iteration // epoch_length,
            **{f"best/{k}": v for k, v in state["best"].items()}, **state["last"],
            "iterations": iteration, "resumed_epoch": None, "train_time_s": train_time,
            "run_time_s": time.perf_counter() - started,
            "samples_per_s": iteration * shared.batch_size / train_time if train_time else 0.0,
            "fused": len(members),
        }  # fmt: skip
        if state.get("out_of_memory"):  # what the agent reads to claim smaller groups from now on
            m.summary["fused_out_of_memory"] = len(members)
        measured = meter.measure(len(members))
        if measured is not None:  # what the agent bounds its next groups by (execution.group_size)
            m.summary["fused_memory"] = measured
        best_file = Path(m.checkpoint.last_checkpoint) if m.checkpoint.last_checkpoint else None
        m.summary["checkpoint"] = str(best_file) if best_file else None
        finish_run(m.run, m.summary, best_file, m.owned)
        m.saver = m.schedule = m.early = None  # its model and optimizer state go, as its slice went (device memory)
        if on_finished is not None:
            on_finished(m.index, m.summary)

    def request_stop() -> None:  # SIGTERM, SIGHUP or Ctrl-C stop every member
        for m in active:
            if m.state["status"] == "finished":
                m.state["status"], m.state["stopped_by"] = "stopped", stop.requested
        trainer.terminate()

    def ran_out_of_memory(exc: BaseException) -> None:
        """Out of device memory after members logged: those still training end interrupted (run again first by the
        agent, in smaller groups; a retry resumes its last checkpoint, alone); those already leaving keep their end."""
        why = f"{OUT_OF_MEMORY}: {_first_line(exc)}"
        for m in active:
            if not m.leaving:
                m.state.update(status="interrupted", stopped_by=why, out_of_memory=True)

    stop = StopSignal(request_stop)  # inside train_fused's: starts with a stop caught while the group was made
    trainer.add_event_handler(Events.STARTED, lambda _: request_stop() if stop.requested else None)
    started = time.perf_counter()
    raised = False  # the group raised: its active members' ends are the caller's to record (they failed)
    with stop.installed():
        try:
            trainer.run(train_batches, max_epochs=max(cfg.epochs for cfg in cfgs))
        except KeyboardInterrupt:  # a second Ctrl-C: every member's end is recorded interrupted by the caller
            raised = True
            raise
        except Exception as exc:
            if not _out_of_memory(exc):
                raised = True
                raise _GroupFailed([m.index for m in active]) from exc
            if not told[0]:  # before any member logged or reported (a group too large for the GPU fails at its
                raised = True  # first steps): each can train alone from the start, as it would have unfused
                for m in members:
                    if m.owned:  # a run of its own again when it trains alone
                        m.run.finish(exit_code=1)
                raise _GroupOutOfMemory(_first_line(exc)) from None
            # later (its first evaluation, a member's checkpoint): the members still training end interrupted, run
            # again first by the agent, in smaller groups (a retry resumes its last checkpoint, alone)
            ran_out_of_memory(exc)
        finally:
            stop.on_stop = lambda: None
            it = trainer.state.iteration
            if raised:
                active.clear()
            ran_out = any(m.state.get("out_of_memory") for m in active)
            if active and trainer.state.output is not None and not ran_out:  # a run stopped mid-epoch still gets
                for m, ok in zip(active, torch.isfinite(trainer.state.output).tolist(), strict=True):
                    if not ok:
                        m.state["status"] = "diverged"
                pending = [m for m in active if m.state["evaluated_at"] != it and m.state["status"] != "diverged"]
                try:
                    if pending:  # its metrics
                        evaluate(pending)
                except Exception as exc:
                    if not _out_of_memory(exc):
                        raise
                    ran_out_of_memory(exc)
            for m in active:
                finish(m, it)
            active.clear()
    return [m.summary or {} for m in members]
