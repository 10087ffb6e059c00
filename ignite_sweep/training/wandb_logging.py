"""Everything that connects the Ignite engines to W&B.

Logged names are part of the interface (sweep YAMLs and reports depend on them):

- ``train/loss``, ``train/lr``, ``train/grad_norm`` every ``log_interval`` iterations, step = iteration
- ``gradients/*`` and ``parameters/*`` histograms (the names and 64 bins of ``wandb.watch(log="all")``) every 10th
  log, at the same step
- ``val/loss``, ``val/accuracy`` and ``epoch`` after each evaluation, at the trainer's iteration as step
- summary ``best/val/accuracy``, ``best/val/loss``, ``epochs_completed``, ``status``
- the best checkpoint as an artifact of type ``model``
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ignite.engine import Engine, EventEnum, Events
from ignite.handlers.wandb_logger import WandBLogger

from ignite_sweep.training.config import DEFAULT_PROJECT

if TYPE_CHECKING:
    import torch

    from ignite_sweep.training.config import TrainConfig


class TrainEvents(EventEnum):
    """``SCALARS``: fired by the trainer every ``log_interval`` iterations once ``trainer.state.train_scalars`` holds
    the loss, lr and gradient norm fetched from the device (``train_scalars``). W&B's ``train/*`` and the divergence
    check hang off it: one event filter checked per iteration instead of one per handler."""

    SCALARS = "scalars"


def start_run(cfg: TrainConfig, run: Any = None, alone: bool = True) -> tuple[Any, bool]:
    """Reuse the given or active run (inside an agent) or start one. Returns (run, whether we own it).
    Not ``alone`` (a member of a fused group): never the active run, and a run started here is one more of the
    process's runs (``reinit="create_new"``)."""
    import wandb

    if run is None and alone:
        run = wandb.run
    if run is not None:
        missing = {k: v for k, v in cfg.to_dict().items() if k not in run.config}
        run.config.update(missing)
        return run, False
    more = {} if alone else {"reinit": "create_new"}
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT), config=cfg.to_dict(), job_type="train",
                     **more)  # fmt: skip
    return run, True


def grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """Global L2 norm of all gradients, as a tensor on their device (0 before the first backward pass)."""
    import torch

    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


def train_scalars(loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``train/loss``, ``train/lr``, ``train/grad_norm`` at a logging iteration: the loss (the trainer's output, a
    tensor) and the gradient norm stay on the device until here and come back together, one wait for the device."""
    import torch

    both = torch.stack([loss.detach().float().reshape(()), grad_norm(model).to(loss.device).float()])
    loss_value, norm_value = both.tolist()
    return {"loss": loss_value, "lr": optimizer.param_groups[0]["lr"], "grad_norm": norm_value}


HISTOGRAM_BINS = 64  # wandb.watch's


def histograms(model: torch.nn.Module) -> dict[str, Any]:
    """``parameters/<name>`` and ``gradients/<name>`` as ``wandb.watch(log="all")`` logs them: ``histc`` in 64 bins
    between each tensor's finite minimum and maximum (one bin where they are equal; nothing for a tensor without a
    finite value). Unlike watch (hooks on every forward and backward pass; per tensor a copy to the host and three
    waits for the device), computed on the device for all tensors at once: two waits, the ranges and the counts.
    A range is one ``aminmax`` pass per tensor; only a tensor whose range is not finite (a NaN or an infinity in it:
    a diverging run) has its finite values masked out, in a third wait."""
    named = list(model.named_parameters())
    return tensor_histograms({name: p for name, p in named},
                             {name: p.grad for name, p in named if p.grad is not None})  # fmt: skip


def tensor_histograms(parameters: dict[str, torch.Tensor], gradients: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``histograms`` of named parameter and gradient tensors (a fused member's slices of the stacked ones)."""
    import torch
    import wandb

    tensors = [("parameters/" + name, p.detach()) for name, p in parameters.items()]
    tensors += [("gradients/" + name, g.detach()) for name, g in gradients.items()]
    tensors = [(name, tensor.reshape(-1).float()) for name, tensor in tensors if tensor.numel()]
    if not tensors:
        return {}
    flats = [flat for _, flat in tensors]
    # (low, high, finite values): a NaN makes both ends NaN and an infinity shows at one end, so a finite range
    # means every value is finite
    ends = torch.stack([torch.stack(torch.aminmax(flat)) for flat in flats]).tolist()
    bounds = [(low, high, flat.numel()) for flat, (low, high) in zip(flats, ends, strict=True)]
    odd = [i for i, (low, high, _) in enumerate(bounds) if not (math.isfinite(low) and math.isfinite(high))]
    if odd:
        ranges = []
        for flat in (flats[i] for i in odd):
            finite = torch.isfinite(flat)
            ranges += [torch.where(finite, flat, torch.inf).amin(), torch.where(finite, flat, -torch.inf).amax(),
                       finite.sum().float()]  # fmt: skip
        for i, (low, high, n_finite) in zip(odd, torch.stack(ranges).reshape(-1, 3).tolist(), strict=True):
            bounds[i] = (low, high, int(n_finite))
    # histc counts what lies in [low, high]: the infinities and NaNs are left out, as watch leaves them out
    spread = [flat.histc(HISTOGRAM_BINS, low, high)
              for flat, (low, high, _) in zip(flats, bounds, strict=True) if low < high]  # fmt: skip
    counts = iter(torch.stack(spread).tolist() if spread else [])
    logged = {}
    for (name, _), (low, high, n_finite) in zip(tensors, bounds, strict=True):
        if low == high:  # a constant tensor (a bias at zero): watch's single bin of its finite values
            logged[name] = wandb.Histogram(np_histogram=([n_finite], [low, high]))
        elif low < high:  # else no finite value at all (low = inf > high = -inf): watch logs nothing either
            edges = [low + (high - low) * i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)]
            logged[name] = wandb.Histogram(np_histogram=(next(counts), edges))
    return logged


def attach_wandb(
    trainer: Engine,
    evaluator: Engine,
    model: torch.nn.Module,
    log_interval: int,
    run: Any = None,
) -> WandBLogger:
    """Attach the W&B handlers to an active run; returns the logger (``logger.log`` etc. reach wandb).

    ``train/*`` are read from ``trainer.state.train_scalars`` when the trainer fires ``TrainEvents.SCALARS``
    (every ``log_interval`` iterations; registered and fired by train.py). A ``run`` that is not the process's active
    one (one of several runs of a process: a run that could not join its fused group) gets the rows itself."""
    import wandb

    logger = WandBLogger(init=False)
    log = run.log if run is not None and run is not wandb.run else logger.log
    hist_every = 10 * log_interval  # histograms cost far more than scalars (watch's own default: every 1000 steps)

    # One wandb.log per logged row, the histograms in the train/* row and the epoch in the val/* row: each call costs
    # W&B's SDK a round trip to its service (about 0.1 ms on a free core, over 1 ms on a busy 2-core machine), which
    # Ignite's OutputHandler (numbers only) and a second call for the histograms or the epoch would double.
    @trainer.on(TrainEvents.SCALARS)
    def log_train(engine: Engine) -> None:
        row = {f"train/{name}": value for name, value in engine.state.train_scalars.items()}
        if engine.state.iteration % hist_every == 0:
            row.update(histograms(model))
        log(row, step=engine.state.iteration)

    @evaluator.on(Events.COMPLETED)
    def log_val(engine: Engine) -> None:
        row = {f"val/{name}": float(engine.state.metrics[name]) for name in ("loss", "accuracy")}
        log({**row, "epoch": trainer.state.epoch}, step=trainer.state.iteration)

    return logger


def finish_run(run: Any, summary: dict[str, Any], checkpoint: Path | None, owned: bool) -> None:
    """Write the summary, upload the best checkpoint as a model artifact, finish the run if we own it."""
    import wandb

    run.summary.update(
        {
            k: summary[k]
            for k in ("best/val/accuracy", "best/val/loss", "epochs_completed", "status", "stopped_by",
                      "train_time_s", "run_time_s", "samples_per_s")  # fmt: skip
            if summary.get(k) is not None
        }
    )
    if checkpoint is not None and checkpoint.exists():
        artifact = wandb.Artifact(
            f"model-{run.id}",
            type="model",
            metadata={k: v for k, v in summary.items() if isinstance(v, (int, float, str))},
        )
        artifact.add_file(str(checkpoint))
        run.log_artifact(artifact, aliases=["best"])
    if owned:
        run.finish(exit_code=0 if summary.get("status") != "failed" else 1)
