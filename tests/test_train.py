"""Real training on the bundled digits, logged with wandb offline and read back from the .wandb file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cuda_available, offline_runs

from ignite_sweep.training.config import TrainConfig
from ignite_sweep.training.train import main, parse_args, train
from ignite_sweep.wandb_file import history, run_file, summary

FAST = {"dataset": "digits", "log_interval": 20, "val_batch_size": 512}


def run_cli(*args: str, env_root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ignite_sweep.train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_DIR": str(env_root)},
    )


def test_cli_trains_digits_to_90_percent_and_logs_every_name(offline_wandb: Path) -> None:
    result = run_cli("--dataset=digits", "--epochs=3", env_root=offline_wandb)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = offline_runs(offline_wandb)
    rows = history(run_file(run_dir))
    keys = set().union(*rows)
    for name in ("train/loss", "train/lr", "train/grad_norm", "val/loss", "val/accuracy", "epoch"):
        assert name in keys, name
    assert any(k.startswith("gradients/") for k in keys) and any(k.startswith("parameters/") for k in keys)
    val = [r for r in rows if "val/accuracy" in r]
    assert [r["epoch"] for r in val] == [1, 2, 3]
    steps = [r["_step"] for r in rows]
    assert steps == sorted(steps)  # logged at the trainer's iteration: nothing dropped as "step < current"
    assert val[-1]["val/accuracy"] >= 0.90
    final = summary(run_file(run_dir))
    assert final["status"] == "finished" and final["epochs_completed"] == 3
    assert final["best/val/accuracy"] >= 0.90
    assert "finished after 3 epochs" in result.stdout


@pytest.mark.parametrize(
    ("arg", "needle"),
    [("--lr=-1", "'lr'"), ("--optimiser=sgd", "did you mean 'optimizer'"), ("--epochs=two", "'epochs'")],
)
def test_cli_bad_input_is_one_line_exit_1(arg: str, needle: str) -> None:
    result = subprocess.run([sys.executable, "-m", "ignite_sweep.train", arg], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and needle in result.stderr and "Traceback" not in result.stderr


def test_cli_help_lists_every_hyperparameter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for key in TrainConfig.__dataclass_fields__:
        assert f"--{key} " in out or key == "factory_args"
    assert "--<other>" in out  # a user factory's own parameters
    assert "(default: 0.01)" in out and "sgd | adam | adamw" in out


def test_parse_args_accepts_wandb_args_and_config_files(tmp_path: Path) -> None:
    config = tmp_path / "best.yaml"
    config.write_text("lr: 0.5\nbatch_size: {value: 16}\noptimizer: adam\n")
    values = parse_args([f"--config={config}", "--lr=0.01", "--nesterov", "--momentum", "0.9"])
    assert values == {"lr": 0.01, "batch_size": 16, "optimizer": "adam", "nesterov": True, "momentum": 0.9}


def test_reporter_stop_ends_gracefully_with_status_stopped(offline_wandb: Path) -> None:
    seen: list[dict] = []

    def reporter(metrics: dict) -> bool:
        seen.append(metrics)
        return len(seen) == 2

    result = train(TrainConfig.from_dict({**FAST, "epochs": 5}), reporter=reporter)
    assert result["status"] == "stopped" and result["epochs_completed"] == 2
    assert [m["epoch"] for m in seen] == [1, 2] and "val/accuracy" in seen[0]
    assert result["checkpoint"] and Path(result["checkpoint"]).exists()
    (run_dir,) = offline_runs(offline_wandb)
    final = summary(run_file(run_dir))
    assert final["status"] == "stopped" and final["epochs_completed"] == 2
    records = history(run_file(run_dir))
    assert max(r["epoch"] for r in records if "epoch" in r) == 2


def test_sigterm_stops_at_the_next_iteration_with_final_metrics(offline_wandb: Path) -> None:
    def reporter(metrics: dict) -> bool:
        os.kill(os.getpid(), signal.SIGTERM)  # what W&B's agent sends to stop a run
        return False

    result = train(TrainConfig.from_dict({**FAST, "epochs": 4}), reporter=reporter)
    assert result["status"] == "stopped"
    assert result["iterations"] == 203  # the signal came during epoch 1's evaluation: no iteration after it
    assert result["epochs_completed"] == 1 and result["val/accuracy"] > 0.5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # our handler is removed afterwards


def test_nan_loss_ends_as_diverged_without_traceback(offline_wandb: Path) -> None:
    result = train(TrainConfig.from_dict({**FAST, "epochs": 2, "lr": 1e6, "momentum": 0.9}))
    assert result["status"] == "diverged"
    assert result["iterations"] < 2 * 203


def test_early_stopping_with_patience(offline_wandb: Path) -> None:
    result = train(TrainConfig.from_dict({**FAST, "epochs": 6, "lr": 1e-12, "patience": 1}))
    assert result["status"] == "early-stopped" and result["epochs_completed"] == 2


@pytest.mark.parametrize("schedule", ["cosine", "step", "warmup-cosine"])
def test_lr_schedules_move_the_logged_lr(offline_wandb: Path, schedule: str) -> None:
    cfg = TrainConfig.from_dict(
        {
            **FAST,
            "epochs": 2,
            "lr_schedule": schedule,
            "lr_step_epochs": 1,
            "warmup_epochs": 0.5,
            "optimizer": "adamw",
            "log_interval": 50,
        }
    )
    train(cfg)
    (run_dir,) = offline_runs(offline_wandb)
    lrs = [r["train/lr"] for r in history(run_file(run_dir)) if "train/lr" in r]
    assert max(lrs) <= cfg.lr + 1e-12
    if schedule == "step":
        assert sorted(set(lrs)) == pytest.approx([cfg.lr * cfg.lr_gamma, cfg.lr])
        return
    assert len(set(lrs)) > 2
    if schedule == "warmup-cosine":
        assert lrs[0] < lrs[1]  # warming up
    else:
        assert lrs[-1] < lrs[0]


def test_the_training_loop_waits_for_the_device_only_where_it_logs(
    offline_wandb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Tensor.item / __bool__ / __float__ / tolist waits for the device on a GPU. One epoch of 203 training
    iterations, default logging (every 10th): one per logged iteration (loss and gradient norm together), two more
    on every 10th log (the histograms' ranges and counts), a few at the start and the end (the evaluation); none on
    the other iterations. TerminateOnNan reads the loss already fetched, a Python float: the bool of the CPU tensor
    it makes of it waits for nothing. The W&B history has every name, the histograms at iterations 100 and 200."""
    import collections
    import traceback

    import torch

    steps, calls = [0], []
    step = torch.optim.SGD.step

    def counted_step(self: torch.optim.Optimizer, *args: object, **kwargs: object) -> object:
        steps[0] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counted_step)
    for name in ("item", "__bool__", "__float__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: object, _original: object = original) -> object:
            if not any("terminate_on_nan" in f.filename for f in traceback.extract_stack(limit=8)):
                calls.append(steps[0])
            return _original(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(torch.Tensor, name, counted)
    result = train(TrainConfig.from_dict({**FAST, "epochs": 1, "log_interval": 10}))
    monkeypatch.undo()
    assert result["iterations"] == 203 and result["status"] == "finished"
    logged = result["iterations"] // 10
    per_step = collections.Counter(s for s in calls if 0 < s < 203)
    assert set(per_step) <= set(range(10, 203, 10)), calls  # only on logged iterations
    assert all(n == (3 if s in (100, 200) else 1) for s, n in per_step.items()), per_step
    assert len(calls) <= logged + 4 + 10, calls  # the start, the evaluation, the end: a constant
    rows = history(run_file(offline_runs(offline_wandb)[-1]))
    names = {k for row in rows for k in row}
    assert {"train/loss", "train/lr", "train/grad_norm", "val/loss", "val/accuracy", "epoch"} <= names
    assert sum("train/loss" in row for row in rows) == logged
    histogram_steps = {row["_step"] for row in rows if any(k.startswith("gradients/") for k in row)}
    assert histogram_steps == {100, 200}, histogram_steps
    assert {"parameters/fc1.weight/bins", "gradients/fc1.weight/values"} <= names, names  # wandb.Histogram's


def test_histograms_are_wandb_watch_histograms() -> None:
    """The same names, bins and counts as wandb.watch(log="all") gives (histc over the finite values, 64 bins from
    the minimum to the maximum; one bin for a constant tensor; nothing for a tensor with no finite value)."""
    import torch

    from ignite_sweep.training.wandb_logging import histograms

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight[0, :2] = torch.tensor([float("nan"), float("inf")])
        model[1].bias.zero_()
        model[2].weight.fill_(float("nan"))
        model[2].bias.copy_(torch.tensor([float("nan"), 0.5]))  # one finite value: one bin, its NaN not counted
    model[:2](torch.randn(5, 6)).sum().backward()
    logged = histograms(model)
    assert "parameters/2.weight" not in logged and "gradients/2.weight" not in logged  # all NaN / no gradient
    assert logged["parameters/1.bias"].histogram == [3] and logged["parameters/1.bias"].bins == [0.0, 0.0]
    assert logged["parameters/2.bias"].histogram == [1] and logged["parameters/2.bias"].bins == [0.5, 0.5]
    weight = model[0].weight.detach().reshape(-1)
    finite = weight[torch.isfinite(weight)]
    low, high = finite.min().item(), finite.max().item()
    histogram = logged["parameters/0.weight"]
    assert histogram.histogram == finite.histc(64, low, high).tolist() and sum(histogram.histogram) == 22
    assert len(histogram.bins) == 65 and histogram.bins[0] == low and histogram.bins[-1] == high
    grad = model[1].weight.grad.reshape(-1)
    grad = grad[torch.isfinite(grad)]  # the NaN weight's row
    assert logged["gradients/1.weight"].histogram == grad.histc(64, grad.min().item(), grad.max().item()).tolist()


def test_compile_trains_the_compiled_model_and_checkpoints_the_model_itself(offline_wandb: Path) -> None:
    """`compile: true`: the engines run torch.compile's module; the checkpoints hold the model's own
    state_dict keys (a retry or a user loads them into the plain model), the W&B scalars are all there."""
    import torch

    folder = offline_wandb / "ckpt"
    cfg = TrainConfig.from_dict({**FAST, "model": "mlp", "epochs": 1, "compile": True})
    result = train(cfg, checkpoint_dir=folder)
    assert result["status"] == "finished" and result["val/accuracy"] > 0.5
    (saved,) = folder.glob("resume_checkpoint_*.pt")
    keys = set(torch.load(saved, weights_only=False)["model"])
    assert keys and not any(k.startswith("_orig_mod.") for k in keys), keys
    names = {k for row in history(run_file(offline_runs(offline_wandb)[-1])) for k in row}
    assert {"train/loss", "train/grad_norm", "val/accuracy"} <= names


@pytest.mark.skipif(not cuda_available(), reason="AMP and channels_last act on CUDA only (gpu_loop_check.sh)")
def test_amp_and_channels_last_on_cuda_checkpoint_the_grad_scaler_and_resume(offline_wandb: Path) -> None:
    """On a GPU: the small CNN with AMP (autocast + GradScaler) and channels-last trains, its resume checkpoint holds
    the GradScaler's state, and a retry resumes after epoch 1 with it."""
    import torch

    options = {**FAST, "model": "cnn", "amp": True, "channels_last": True, "device": "cuda"}
    first = train(TrainConfig.from_dict({**options, "epochs": 1}), checkpoint_dir=offline_wandb / "first")
    assert first["status"] == "finished" and first["val/accuracy"] > 0.3, first
    (saved,) = (offline_wandb / "first").glob("resume_checkpoint_*.pt")
    assert torch.load(saved, weights_only=False)["amp_scaler"]["scale"] > 0
    second = train(TrainConfig.from_dict({**options, "epochs": 2}), resume_from=offline_wandb / "first",
                   checkpoint_dir=offline_wandb / "second")  # fmt: skip
    assert second["resumed_epoch"] == 1 and second["epochs_completed"] == 2 and second["status"] == "finished"


def test_logged_grad_norm_and_lr_are_the_values_of_the_iteration_they_are_logged_at(offline_wandb: Path) -> None:
    """Every logged ``train/grad_norm`` is a finite positive number, and the first (log_interval 1: iteration 1)
    is the global L2 norm of the gradients of one ``backward()`` on the same first batch with the same initial
    weights, computed here by hand (same seed, same model, same shuffled batches; no dropout, so the forward pass
    draws nothing). ``train/lr`` is the cosine schedule's value at each iteration (README: per iteration, Ignite's
    ``CosineAnnealingScheduler`` from ``lr`` towards 0 over the run's iterations), not the configured lr."""
    import math

    import torch
    import torch.nn.functional as F

    from ignite_sweep.training.data import TensorBatches, load_dataset
    from ignite_sweep.training.models import build_model

    cfg = TrainConfig.from_dict({**FAST, "model": "mlp", "epochs": 1, "batch_size": 1024, "log_interval": 1,
                                 "dropout": 0.0, "device": "cpu", "lr": 0.05, "lr_schedule": "cosine"})  # fmt: skip
    result = train(cfg)
    total = result["iterations"]
    rows = [r for r in history(run_file(offline_runs(offline_wandb)[-1])) if "train/grad_norm" in r]
    assert [r["_step"] for r in rows] == list(range(1, total + 1))  # every iteration logged
    norms = [r["train/grad_norm"] for r in rows]
    assert all(math.isfinite(n) and n > 0 for n in norms), norms

    torch.manual_seed(cfg.seed)  # what train() does before it builds the model
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.seed, cfg.factory_kwargs("dataset"))
    model = build_model(cfg.model, data.in_channels, data.image_size, data.num_classes, cfg.dropout,
                        cfg.factory_kwargs("model"))  # fmt: skip
    x, y = next(iter(TensorBatches(data.train_x, data.train_y, cfg.batch_size, shuffle=True, seed=cfg.seed)))
    model.train()
    loss = F.nll_loss(model(x), y)
    loss.backward()
    by_hand = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    assert rows[0]["train/loss"] == pytest.approx(loss.item(), rel=1e-5)  # the same batch and weights
    assert rows[0]["train/grad_norm"] == pytest.approx(by_hand, rel=1e-4)

    cycle = total + 1  # the schedule's cycle: the run's iterations (train.attach_lr_schedule)
    expected = [cfg.lr * (1 + math.cos(math.pi * (k - 1) / cycle)) / 2 for k in range(1, total + 1)]
    assert [r["train/lr"] for r in rows] == pytest.approx(expected, rel=1e-6)


def test_a_stop_caught_before_training_starts_ends_the_run_with_nothing_evaluated(offline_wandb: Path) -> None:
    """A stop caught by an enclosing handler before train() installs its own (train_fused runs trainings one after
    another under one): the run stops as it starts, and reports and logs no evaluation of an untrained model."""
    import os
    import signal

    from ignite_sweep.training.train import StopSignal

    reported: list[dict] = []
    outer = StopSignal(lambda: None)
    with outer.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        summary = train(TrainConfig.from_dict({**FAST, "epochs": 2}), reporter=lambda m: reported.append(m) or False)
    assert (summary["status"], summary["stopped_by"], summary["epochs_completed"]) == ("stopped", "SIGTERM", 0)
    assert reported == [] and "val/accuracy" not in summary
