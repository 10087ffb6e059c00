"""Everything that connects the Ignite engines to W&B.

Logged names are part of the interface (sweep YAMLs and reports depend on them):

- ``train/loss``, ``train/lr``, ``train/grad_norm`` every ``log_interval`` iterations, step = iteration
- ``gradients/*`` and ``parameters/*`` histograms through ``wandb.watch(log="all")``
- ``val/loss``, ``val/accuracy`` and ``epoch`` after each evaluation, at the trainer's iteration as step
- summary ``best/val/accuracy``, ``best/val/loss``, ``epochs_completed``, ``status``
- the best checkpoint as an artifact of type ``model``
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ignite.engine import Engine, Events
from ignite.handlers.wandb_logger import WandBLogger, global_step_from_engine

from ignite_sweep.training.config import DEFAULT_PROJECT

if TYPE_CHECKING:
    import torch

    from ignite_sweep.training.config import TrainConfig


def start_run(cfg: TrainConfig, run: Any = None) -> tuple[Any, bool]:
    """Reuse the given or active run (inside an agent) or start one. Returns (run, whether we own it)."""
    import wandb

    run = run if run is not None else wandb.run
    if run is not None:
        missing = {k: v for k, v in cfg.to_dict().items() if k not in run.config}
        run.config.update(missing)
        return run, False
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT), config=cfg.to_dict(), job_type="train")
    return run, True


def grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """Global L2 norm of all gradients, as a tensor on their device (0 before the first backward pass)."""
    import torch

    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


def train_scalars(loss: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``train/loss``, ``train/lr``, ``train/grad_norm`` at a logging iteration: the loss and the gradient norm stay
    on the device until here and come back together, one wait for the device per logged iteration."""
    import torch

    norm = grad_norm(model)
    if isinstance(loss, torch.Tensor):
        both = torch.stack([loss.detach().float().reshape(()), norm.to(loss.device).float()])
        loss_value, norm_value = both.tolist()
    else:
        loss_value, norm_value = loss, norm.item()
    return {"loss": loss_value, "lr": optimizer.param_groups[0]["lr"], "grad_norm": norm_value}


def attach_wandb(
    trainer: Engine,
    evaluator: Engine,
    model: torch.nn.Module,
    log_interval: int,
    histograms: bool = True,
) -> WandBLogger:
    """Attach the W&B handlers to an active run; returns the logger (``logger.log`` etc. reach wandb).

    ``train/*`` are read from ``trainer.state.train_scalars`` (``train_scalars``), which the trainer must set
    every ``log_interval`` iterations in a handler attached before this one."""
    logger = WandBLogger(init=False)
    logger.attach_output_handler(
        trainer,
        event_name=Events.ITERATION_COMPLETED(every=log_interval),
        tag="train",
        output_transform=lambda _: trainer.state.train_scalars,  # fetched once per logged iteration (train.py)
    )
    logger.attach_output_handler(
        evaluator,
        event_name=Events.COMPLETED,
        tag="val",
        metric_names=["loss", "accuracy"],
        global_step_transform=global_step_from_engine(trainer, Events.ITERATION_COMPLETED),
    )

    @evaluator.on(Events.COMPLETED)
    def log_epoch(_: Engine) -> None:
        logger.log({"epoch": trainer.state.epoch}, step=trainer.state.iteration)

    # Histograms cost far more than scalars (and wandb's own default is every 1000 steps): every 10th log. Not with
    # torch.compile: wandb.watch hooks every parameter, which breaks the compiled graph.
    if histograms:
        logger.watch(model, log="all", log_freq=10 * log_interval)
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
    try:
        wandb.unwatch()
    except Exception:  # noqa: BLE001 - unwatch of a model that was never watched is not an error
        pass
    if owned:
        run.finish(exit_code=0 if summary.get("status") != "failed" else 1)
