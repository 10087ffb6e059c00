"""Fused runs (training/fused.py): each member trains as its run would alone, on real Ignite engines and the bundled
digits. A member's val/accuracy and val/loss after every epoch equal its unfused train() run's (same seed: same init,
batches and dropout masks) within 1e-4; a member that diverges or is stopped leaves, the others stay equal."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import offline_runs

from ignite_sweep.training.config import TrainConfig
from ignite_sweep.training.fused import can_fuse, train_fused
from ignite_sweep.training.train import train
from ignite_sweep.wandb_file import history, records, run_file, summary

BASE = {"dataset": "digits", "model": "mlp", "epochs": 2, "val_batch_size": 512, "log_interval": 20}
TOLERANCE = 1e-4
CALM = 0.003
"""The lr of the 2-epoch tests of a member leaving, diverging or resumed (with momentum 0.9). At 0.01, epoch 2 turns
float rounding (a vmapped matmul sums in another order: weights 1e-8 apart after epoch 1) into 5e-4 (no dropout) to
1e-3 (dropout 0.5) of val/loss."""


def configs(*variants: dict[str, Any]) -> list[TrainConfig]:
    return [TrainConfig.from_dict({**BASE, **v}) for v in variants]


class Collect:
    """A reporter that keeps every evaluation and stops the run after ``stop_after`` of them."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.seen: list[dict[str, Any]] = []
        self.stop_after = stop_after

    def __call__(self, metrics: dict[str, Any]) -> bool:
        self.seen.append(metrics)
        return self.stop_after is not None and len(self.seen) >= self.stop_after


def assert_equal_to_unfused(cfg: TrainConfig, fused: Collect, summary_: dict[str, Any]) -> None:
    alone = Collect(fused.stop_after)
    expected = train(cfg, reporter=alone)
    assert [m["epoch"] for m in fused.seen] == [m["epoch"] for m in alone.seen]
    for mine, theirs in zip(fused.seen, alone.seen, strict=True):
        for name in ("val/accuracy", "val/loss"):
            assert mine[name] == pytest.approx(theirs[name], abs=TOLERANCE), (cfg, mine["epoch"], name)
    for key in ("status", "epochs_completed", "iterations", "stopped_by"):
        assert summary_[key] == expected[key], key
    assert set(expected) <= set(summary_)


@pytest.fixture
def no_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the equivalence tests read metrics, not W&B files
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a disabled run's folder (its best checkpoint): not /tmp
    torch.set_num_threads(1)


def test_sgd_members_momentum_nesterov_weight_decay_and_a_schedule_equal_their_unfused_runs(no_wandb: None) -> None:
    cfgs = configs({"lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
                   {"lr": 0.01, "momentum": 0.0},
                   {"lr": 0.03, "momentum": 0.5, "lr_schedule": "cosine"})  # fmt: skip
    reporters = [Collect() for _ in cfgs]
    summaries = train_fused(cfgs, reporters=reporters)
    assert [s["fused"] for s in summaries] == [3, 3, 3]  # one group
    for cfg, reporter, result in zip(cfgs, reporters, summaries, strict=True):
        assert_equal_to_unfused(cfg, reporter, result)


def test_adam_and_adamw_members_with_weight_decay_and_schedules_equal_their_unfused_runs(no_wandb: None) -> None:
    cfgs = configs({"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-3},
                   {"optimizer": "adam", "lr": 3e-3, "lr_schedule": "step", "lr_step_epochs": 1},
                   {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-2},
                   {"optimizer": "adamw", "lr": 2e-3, "lr_schedule": "warmup-cosine", "warmup_epochs": 0.5},
                   )  # fmt: skip
    groups, reasons = can_fuse(cfgs)
    assert groups == [[0, 1], [2, 3]] and not reasons  # the optimizer type shapes a group
    reporters = [Collect() for _ in cfgs]
    summaries = train_fused(cfgs, reporters=reporters)
    for cfg, reporter, result in zip(cfgs, reporters, summaries, strict=True):
        assert_equal_to_unfused(cfg, reporter, result)


@pytest.mark.parametrize(
    ("kind", "members"),
    [("sgd", [{"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}, {"lr": 0.01, "momentum": 0.0},
              {"lr": 0.02, "momentum": 0.5}]),
     ("adam", [{"lr": 1e-3, "weight_decay": 1e-3}, {"lr": 3e-3}]),
     ("adamw", [{"lr": 1e-3, "weight_decay": 1e-2}, {"lr": 2e-3}])],
)  # fmt: skip
def test_the_stacked_optimizer_is_torch_optims_update_bit_for_bit(kind: str, members: list[dict[str, Any]]) -> None:
    """Each member's slice after 5 steps (its lr changed between them, as a schedule does) is what its own
    torch.optim optimizer makes of the same gradients, to the bit."""
    from ignite_sweep.training.stacked import StackedOptimizer

    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(5)]
    make = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    alone = [[torch.nn.Parameter(t.clone()) for t in start] for _ in members]
    optimizers = [make(params, **hp) for params, hp in zip(alone, members, strict=True)]
    stacked = {f"p{i}": torch.stack([params[i].detach() for params in alone]) for i in range(len(start))}
    fused = StackedOptimizer(kind, optimizers, stacked)
    for step in range(5):
        grads = {name: torch.randn_like(t) for name, t in stacked.items()}
        for k, (params, optimizer) in enumerate(zip(alone, optimizers, strict=True)):
            optimizer.param_groups[0]["lr"] *= 0.9 if step else 1.0
            for i, p in enumerate(params):
                p.grad = grads[f"p{i}"][k].clone()
            optimizer.step()
        with torch.no_grad():
            fused.step(stacked, grads)
    for k, params in enumerate(alone):
        for i, p in enumerate(params):
            assert torch.equal(stacked[f"p{i}"][k], p.detach()), (kind, members[k], i)


def test_a_member_stopped_by_its_reporter_leaves_and_the_others_stay_equal(no_wandb: None) -> None:
    cfgs = configs({"lr": CALM, "momentum": 0.9}, {"lr": 2 * CALM, "momentum": 0.5}, {"lr": 2 * CALM, "epochs": 1})
    reporters = [Collect(stop_after=1), Collect(), Collect()]  # hyperband stops member 0 after its first epoch
    summaries = train_fused(cfgs, reporters=reporters)
    assert summaries[0]["status"] == "stopped" and summaries[0]["stopped_by"] == "sweep"
    assert summaries[0]["epochs_completed"] == 1 and len(reporters[0].seen) == 1
    assert summaries[2]["status"] == "finished" and summaries[2]["epochs_completed"] == 1  # fewer epochs: leaves
    for cfg, reporter, result in zip(cfgs, reporters, summaries, strict=True):
        assert_equal_to_unfused(cfg, reporter, result)


def test_a_nan_member_ends_diverged_and_the_others_stay_equal(no_wandb: None) -> None:
    cfgs = configs({"lr": 1e6, "momentum": 0.9}, {"lr": CALM, "momentum": 0.9})
    reporters = [Collect(), Collect()]
    summaries = train_fused(cfgs, reporters=reporters)
    assert summaries[0]["status"] == "diverged" and summaries[0]["iterations"] < 203
    for cfg, reporter, result in zip(cfgs, reporters, summaries, strict=True):
        assert_equal_to_unfused(cfg, reporter, result)  # the NaN one too: it diverges at the same iteration


def test_a_fused_members_wandb_history_has_every_name_an_unfused_run_logs(offline_wandb: Path) -> None:
    cfgs = configs({"epochs": 1, "log_interval": 10, "lr": 0.02}, {"epochs": 1, "log_interval": 10, "lr": 0.05})
    train(cfgs[0])
    (alone_dir,) = offline_runs(offline_wandb)
    summaries = train_fused(cfgs)
    fused_dirs = [d for d in offline_runs(offline_wandb) if d != alone_dir]
    assert len(fused_dirs) == 2 and all(s["status"] == "finished" for s in summaries)

    def logged(run_dir: Path) -> tuple[dict[str, list[int]], dict[str, Any], set[str]]:
        steps: dict[str, list[int]] = {}
        for row in history(run_file(run_dir)):
            for name in row:
                steps.setdefault(name, []).append(row["_step"])
        kinds = {r.WhichOneof("record_type") for r in records(run_file(run_dir))}
        return steps, summary(run_file(run_dir)), kinds

    alone_steps, alone_summary, alone_kinds = logged(alone_dir)
    assert "artifact" in alone_kinds
    by_lr = {}
    for run_dir in fused_dirs:
        steps, final, kinds = logged(run_dir)
        assert set(steps) - {"_runtime", "_timestamp"} == set(alone_steps) - {"_runtime", "_timestamp"}
        assert {k: v for k, v in steps.items() if not k.startswith("_")} == {
            k: v for k, v in alone_steps.items() if not k.startswith("_")}  # same names at the same steps
        assert {k for k in alone_summary if not k.startswith("_")} <= set(final)
        assert "artifact" in kinds  # the best checkpoint, a model artifact
        by_lr[final["status"], round(float(history(run_file(run_dir))[0]["train/lr"]), 6)] = final
    assert set(by_lr) == {("finished", 0.02), ("finished", 0.05)}  # each member its own run
    first = [r for r in history(run_file(alone_dir)) if "val/accuracy" in r]
    same = [r for d in fused_dirs for r in history(run_file(d)) if "val/accuracy" in r]
    assert any(r["val/accuracy"] == pytest.approx(first[0]["val/accuracy"], abs=TOLERANCE) for r in same)


def untraceable(in_channels: int, image_size: tuple[int, int], num_classes: int, dropout: float) -> torch.nn.Module:
    """A model torch.func cannot vmap: its forward branches on a value of the data."""

    class Branching(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(in_channels * image_size[0] * image_size[1], num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.fc(x.flatten(1))
            if out.sum() > 0:  # data-dependent control flow
                out = out * 2
            return torch.log_softmax(out, dim=-1)

    return Branching()


def test_can_fuse_gives_the_fallback_reason_and_the_run_trains_alone(no_wandb: None) -> None:
    untraceable_ = {"model": "test_fused:untraceable", "epochs": 1}
    cfgs = configs(untraceable_, {**untraceable_, "lr": 0.1}, {"batch_size": 32}, {"lr": 0.1}, {"lr": 0.2})
    groups, reasons = can_fuse(cfgs)
    assert groups == [[3, 4]]
    assert "model 'test_fused:untraceable' cannot be traced by torch.func" in reasons[0], reasons
    assert reasons[0] == reasons[1] and "\n" not in reasons[0]
    assert reasons[2] == "different architecture-shaping hyperparameters: batch_size 32 (not 64)", reasons[2]
    told: list[tuple[int, str]] = []
    summaries = train_fused(cfgs[:2], on_alone=lambda i, why: told.append((i, why)))
    assert [i for i, _ in told] == [0, 1] and all(s["status"] == "finished" and "fused" not in s for s in summaries)


class TooBig(torch.nn.Module):
    """Runs out of device memory in a fused group at its first batch, as K members too many for a GPU do (the fused
    step's batched weights are what it cannot hold); the probe's 2 samples and a run alone fit."""

    def __init__(self, inputs: int, num_classes: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(inputs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2 and torch._C._functorch.is_functorch_wrapped_tensor(self.fc.weight):  # vmapped
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.log_softmax(self.fc(x.flatten(1)), dim=-1)


def too_big_when_fused(in_channels: int, image_size: tuple[int, int], num_classes: int,
                       dropout: float) -> torch.nn.Module:  # fmt: skip
    return TooBig(in_channels * image_size[0] * image_size[1], num_classes)


def test_a_group_out_of_device_memory_trains_its_members_alone(no_wandb: None) -> None:
    cfgs = configs(*({"model": "test_fused:too_big_when_fused", "epochs": 1, "lr": lr} for lr in (0.01, 0.02)))
    assert can_fuse(cfgs)[0] == [[0, 1]]
    told: list[tuple[int, str]] = []
    summaries = train_fused(cfgs, on_alone=lambda i, why: told.append((i, why)))
    assert told == [(i, "its group of 2 ran out of device memory (CUDA out of memory. Tried to allocate 2.00 GiB)")
                    for i in (0, 1)]  # fmt: skip
    for cfg, summary_ in zip(cfgs, summaries, strict=True):
        assert summary_["status"] == "finished" and "fused" not in summary_ and summary_["fused_out_of_memory"] == 2
        assert summary_["val/accuracy"] == pytest.approx(train(cfg)["val/accuracy"], abs=TOLERANCE)


class Breaks(TooBig):
    """A fused group of it raises (not for want of memory) at its first batch; alone it trains."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2 and torch._C._functorch.is_functorch_wrapped_tensor(self.fc.weight):  # vmapped
            raise ValueError("this model breaks when fused")
        return torch.log_softmax(self.fc(x.flatten(1)), dim=-1)


def breaks_when_fused(in_channels: int, image_size: tuple[int, int], num_classes: int,
                      dropout: float) -> torch.nn.Module:  # fmt: skip
    return Breaks(in_channels * image_size[0] * image_size[1], num_classes)


def test_a_group_that_raises_fails_its_own_runs_only(no_wandb: None) -> None:
    breaks = {"model": "test_fused:breaks_when_fused", "epochs": 1}
    cfgs = configs(breaks, {**breaks, "lr": 0.02}, {**breaks, "batch_size": 32})  # the third trains alone
    failed: list[tuple[int, str]] = []
    ended: list[tuple[int, str]] = []
    summaries = train_fused(cfgs, on_failed=lambda i, exc: failed.append((i, str(exc))), on_alone=lambda *_: None,
                            on_finished=lambda i, s: ended.append((i, s["status"])))  # fmt: skip
    assert failed == [(0, "this model breaks when fused"), (1, "this model breaks when fused")]
    assert ended == [(2, "finished")] and summaries[2]["status"] == "finished" and summaries[:2] == [{}, {}]
    with pytest.raises(ValueError, match="breaks when fused"):  # without on_failed the error goes up
        train_fused(cfgs[:2])


def test_a_stop_during_the_group_ends_the_runs_not_started_yet(no_wandb: None) -> None:
    """SIGTERM (a cluster's preemption, `cancel`) while the group trains: the group stops, and the run that would
    have trained alone after it never starts: it ends stopped after 0 epochs."""
    import os
    import signal

    def preempt(_metrics: dict[str, Any]) -> bool:
        os.kill(os.getpid(), signal.SIGTERM)
        return False

    cfgs = configs({"epochs": 3}, {"epochs": 3, "lr": 0.02}, {"epochs": 3, "batch_size": 32})
    told: list[int] = []
    summaries = train_fused(cfgs, reporters=[preempt, None, None], on_alone=lambda i, _why: told.append(i))
    assert [(s["status"], s["stopped_by"]) for s in summaries] == [("stopped", "SIGTERM")] * 3
    assert [s["epochs_completed"] for s in summaries] == [1, 1, 0] and told == []


def test_a_fused_members_resume_checkpoint_is_one_an_unfused_retry_resumes(no_wandb: None, tmp_path: Path) -> None:
    """A retry may run unfused: it resumes a member's checkpoint (model, optimizer state, lr schedule, RNG, epoch)
    and ends where the uninterrupted unfused run ends."""
    cfgs = configs({"epochs": 1, "lr": CALM, "momentum": 0.9}, {"epochs": 1, "lr": 2 * CALM, "lr_schedule": "cosine"})
    train_fused(cfgs, checkpoint_dirs=[tmp_path / "a", tmp_path / "b"])
    assert "resume_checkpoint_1.pt" in [p.name for p in (tmp_path / "a").iterdir()]
    two_epochs = configs({"lr": CALM, "momentum": 0.9})[0]
    resumed = train(two_epochs, resume_from=tmp_path / "a")
    whole = train(two_epochs)
    assert resumed["resumed_epoch"] == 1 and resumed["epochs_completed"] == 2
    for name in ("val/accuracy", "val/loss"):
        assert resumed[name] == pytest.approx(whole[name], abs=TOLERANCE)


BUILT = {"count": 0, "at": 0, "then": ""}  # what built_then does at its ``at``-th build


def built_then(in_channels: int, image_size: tuple[int, int], num_classes: int, dropout: float) -> torch.nn.Module:
    """The linear model; its ``BUILT["at"]``-th build sends this process SIGTERM (a stop while the group is made)
    or raises (the group cannot be made)."""
    import os
    import signal

    BUILT["count"] += 1
    if BUILT["count"] == BUILT["at"]:
        if BUILT["then"] == "raise":
            raise RuntimeError("this model cannot be built now")
        os.kill(os.getpid(), signal.SIGTERM)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size[0] * image_size[1],
                                                                    num_classes))  # fmt: skip


@pytest.mark.parametrize("when", ["the group is made", "the group's last member ends"])
def test_a_stop_before_or_after_a_group_trains_stops_every_run_not_trained(no_wandb: None, when: str) -> None:
    """SIGTERM while the group is being made (its first member built: after can_fuse's probe built two), or while
    its last member's end is being recorded: no run trains after it (each that had not ends stopped, 0 epochs)."""
    import os
    import signal

    BUILT.update(count=0, at=3 if when == "the group is made" else 0, then="signal")
    linear = {"model": "test_fused:built_then", "epochs": 2}
    cfgs = configs(linear, {**linear, "lr": 0.02}, {**linear, "batch_size": 32})  # the third trains alone

    def on_finished(i: int, _summary: dict[str, Any]) -> None:
        if when != "the group is made" and i == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    summaries = train_fused(cfgs, on_finished=on_finished, on_alone=lambda *_: None)
    assert [(s["status"], s["stopped_by"]) for s in summaries][2] == ("stopped", "SIGTERM")
    expected = [0, 0, 0] if when == "the group is made" else [2, 2, 0]
    assert [s["epochs_completed"] for s in summaries] == expected


def test_a_group_that_cannot_be_made_fails_its_own_runs_only(no_wandb: None) -> None:
    BUILT.update(count=0, at=3, then="raise")  # the group's first member (can_fuse's probe built two)
    linear = {"model": "test_fused:built_then", "epochs": 1}
    cfgs = configs(linear, {**linear, "lr": 0.02}, {**linear, "batch_size": 32})
    failed: list[tuple[int, str]] = []
    summaries = train_fused(cfgs, on_failed=lambda i, exc: failed.append((i, str(exc))), on_alone=lambda *_: None)
    assert failed == [(0, "this model cannot be built now"), (1, "this model cannot be built now")]
    assert summaries[2]["status"] == "finished" and summaries[2]["epochs_completed"] == 1


class EvalOutOfMemory(TooBig):
    """Trains in a fused group; its group's first evaluation runs out of device memory (as a K too large for the
    GPU does at its first evaluation, after the members logged); alone it trains. With ``stop_at`` N, its group's
    N-th training step sends the process SIGTERM first (the group then stops mid-epoch: its final evaluation)."""

    stop_at = 0
    steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os
        import signal

        vmapped = torch._C._functorch.is_functorch_wrapped_tensor(self.fc.weight)
        if vmapped and self.training and x.shape[0] > 2:
            EvalOutOfMemory.steps += 1
            if EvalOutOfMemory.steps == EvalOutOfMemory.stop_at:
                os.kill(os.getpid(), signal.SIGTERM)
        if vmapped and not self.training and x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return torch.log_softmax(self.fc(x.flatten(1)), dim=-1)


def eval_out_of_memory(in_channels: int, image_size: tuple[int, int], num_classes: int,
                       dropout: float) -> torch.nn.Module:  # fmt: skip
    return EvalOutOfMemory(in_channels * image_size[0] * image_size[1], num_classes)


@pytest.mark.parametrize("stop_at", [0, 30])
def test_a_group_out_of_memory_after_it_logged_interrupts_its_members(no_wandb: None, stop_at: int) -> None:
    """Out of device memory at the first evaluation after the members logged (at the end of epoch 1; or, stopped by
    SIGTERM at step 30, at the final evaluation of the stopped group): they cannot start over in this process (their
    W&B history has steps), so they end interrupted (run again first, in smaller groups), never failed."""
    EvalOutOfMemory.stop_at, EvalOutOfMemory.steps = stop_at, 0
    cfgs = configs(*({"model": "test_fused:eval_out_of_memory", "epochs": 2, "lr": lr} for lr in (0.01, 0.02)))
    summaries = train_fused(cfgs, on_failed=lambda i, exc: pytest.fail(f"run {i} failed: {exc}"))
    for summary_ in summaries:
        assert summary_["status"] == "interrupted" and summary_["fused_out_of_memory"] == 2, summary_
        assert summary_["stopped_by"].startswith("its fused group ran out of device memory: CUDA out of memory")
        assert summary_["iterations"] == (30 if stop_at else summary_["iterations"]) and "val/accuracy" not in summary_
        assert summary_["epochs_completed"] == (0 if stop_at else 1)


def random_split_digits(data_dir: str, download: bool = True, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A user's dataset: the digits, re-split at random from torch's global RNG (as random_split without a
    generator does)."""
    from ignite_sweep.training.data import load_dataset

    d = load_dataset("digits", data_dir)
    x, y = torch.cat([d.train_x[:3000], d.val_x]), torch.cat([d.train_y[:3000], d.val_y])
    order = torch.randperm(len(x))
    cut = int(0.9 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def test_a_dataset_drawing_from_torchs_rng_gives_each_member_its_unfused_run(no_wandb: None) -> None:
    """The group loads its data as train() does (seeded first) and seeds each member's init after it, so a member
    equals its run alone in a fresh process, whose dataset draws from the seeded RNG before its model is built."""
    from ignite_sweep.training import data

    cfgs = configs(*({"dataset": "test_fused:random_split_digits", "epochs": 1, "lr": lr} for lr in (0.01, 0.03)))
    fused = [Collect(), Collect()]
    train_fused(cfgs, reporters=fused)
    for cfg, mine in zip(cfgs, fused, strict=True):
        data._CACHE.clear()  # as a process of its own: the factory draws again
        alone = Collect()
        train(cfg, reporter=alone)
        for name in ("val/accuracy", "val/loss"):
            assert mine.seen[0][name] == pytest.approx(alone.seen[0][name], abs=TOLERANCE), name


def summed_nll(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A user's loss that is not a mean over the batch (its value depends on how many samples it sees)."""
    return torch.nn.functional.nll_loss(log_probs, target, reduction="sum")


def batch_statistics(in_channels: int, image_size: tuple[int, int], num_classes: int,
                     dropout: float) -> torch.nn.Module:  # fmt: skip
    """Batch norm without running statistics: its evaluation of a sample depends on the rest of the batch."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size[0] * image_size[1], 32),
                               torch.nn.BatchNorm1d(32, track_running_stats=False), torch.nn.ReLU(),
                               torch.nn.Linear(32, num_classes), torch.nn.LogSoftmax(dim=-1))  # fmt: skip


@pytest.mark.parametrize("variant", [{"loss": "test_fused:summed_nll", "lr": 1e-4},
                                     {"model": "test_fused:batch_statistics"}])  # fmt: skip
def test_a_fused_evaluation_equals_ignites_on_whole_batches(no_wandb: None, variant: dict[str, Any]) -> None:
    """The group evaluates its members in slices of the batch (memory) but takes the loss on the whole batch, and
    a model whose evaluation depends on the batch on whole batches: val/loss and val/accuracy are Ignite's."""
    cfgs = configs(*({"epochs": 1, "lr": lr, **variant} for lr in (0.01, 0.02, 0.03)))
    fused = [Collect(), Collect(), Collect()]
    summaries = train_fused(cfgs, reporters=fused)
    assert all(s["fused"] == 3 for s in summaries)  # trained together, not alone
    for cfg, mine in zip(cfgs, fused, strict=True):
        alone = Collect()
        train(cfg, reporter=alone)
        for name in ("val/accuracy", "val/loss"):
            assert mine.seen[0][name] == pytest.approx(alone.seen[0][name], rel=TOLERANCE, abs=TOLERANCE), name
