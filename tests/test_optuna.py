"""``method: custom`` with ``scheduler.engine: optuna`` on the local backend: W&B's distributions mapped to Optuna's
(and the ones it cannot sample refused in one line), TPE and a define-by-run search space through the real agent
loop and a real SQLite store with two agents, a pruner's stops, re-runs as the same trial, multi-objective scores,
and the source file's errors at ``create``. Real Optuna throughout; runs are forked functions logging with wandb
offline (the built-in trainer's configs are checked at create, as for W&B's methods)."""

from __future__ import annotations

import math
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import FAST

from ignite_sweep.backends.local import LocalBackend
from ignite_sweep.errors import ConfigError
from ignite_sweep.search.optuna_engine import OptunaEngine
from ignite_sweep.search.optuna_space import Space
from ignite_sweep.store.sql import LocalStore
from ignite_sweep.sweepfile import validate_sweep

pytest.importorskip("optuna")

LOSS = {"name": "loss", "goal": "minimize"}

SOURCE = '''
import optuna


def opt():
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=5), optuna.pruners.ThresholdPruner(
        upper=1.0)


def space(trial):
    kind = trial.suggest_categorical("kind", ["small", "big"])
    if kind == "small":
        trial.suggest_float("x", 0.0, 0.5)
    else:
        trial.suggest_float("x", 2.0, 3.0)
        trial.suggest_int("n", 1, 4)


def asha():
    return optuna.samplers.RandomSampler(seed=0), optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=2)


def two():
    return optuna.samplers.NSGAIISampler(seed=0)


def broken():
    raise ValueError("no sampler today")


def space_broken(trial):
    return {"x": trial.suggest_float("x", 0, 1) / 0}
'''


def train() -> None:
    """A run of the sweep: its loss is x at every step (and 1 - x, its other objective)."""
    import time

    import wandb

    run = wandb.init()
    x = run.config["x"]
    for _ in range(3):
        run.log({"loss": x, "other": 1 - x})
        time.sleep(0.3)
    run.finish()


def agent(url: str, sweep_id: str, out: Any) -> None:
    result = LocalBackend(LocalStore(url)).run_agent(sweep_id, function=train, echo=lambda _line: None)
    out.put(result.reason)


def two_agents(url: str, sweep_id: str) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    agents = [ctx.Process(target=agent, args=(url, sweep_id, out)) for _ in range(2)]
    for process in agents:
        process.start()
    reasons = [out.get(timeout=240) for _ in agents]
    for process in agents:
        process.join(timeout=60)
    return reasons


def custom(tmp_path: Path, **config: Any) -> dict[str, Any]:
    """A checked function sweep (the Python API's path: the source file next to it, as to a sweep file)."""
    (tmp_path / "space.py").write_text(SOURCE)
    body = {k: v for k, v in {"method": "custom", "scheduler": {"engine": "optuna"}, "metric": LOSS, **config}.items()
            if v is not None}  # fmt: skip
    return validate_sweep(body, str(tmp_path / "sweep.yaml"), for_function=True, folder=tmp_path)


# ---------------------------------------------------------------- the search space


WANDB = {  # W&B spec -> (Optuna distribution kind, low, high, log, step), or a constant
    "u": ({"min": 0.5, "max": 1.5}, ("Float", 0.5, 1.5, False, None)),
    "i": ({"min": 2, "max": 9}, ("Int", 2, 9, False, 1)),
    "iu": ({"distribution": "int_uniform", "min": 1, "max": 3}, ("Int", 1, 3, False, 1)),
    "qu": ({"distribution": "q_uniform", "min": 1, "max": 9, "q": 2}, ("Int", 2, 8, False, 2)),
    "quf": ({"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}, ("Float", 0.0, 1.0, False, 0.25)),
    "luv": ({"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1}, ("Float", 1e-4, 0.1, True, None)),
    "lu": ({"distribution": "log_uniform", "min": -4, "max": 0}, ("Float", math.exp(-4), 1.0, True, None)),
    "iluv": ({"distribution": "inv_log_uniform_values", "min": 0.01, "max": 1}, ("Float", 0.01, 1.0, True, None)),
    "ilu": ({"distribution": "inv_log_uniform", "min": 0, "max": 4}, ("Float", math.exp(-4), 1.0, True, None)),
    "qluv": ({"distribution": "q_log_uniform_values", "min": 1, "max": 1000, "q": 5}, ("Float", 1, 1000, True, None)),
    "qlu": ({"distribution": "q_log_uniform", "min": 0, "max": 3, "q": 0.5}, ("Float", 1.0, math.exp(3), True, None)),
    "v": ({"values": ["sgd", "adam"]}, ("Categorical",)),
    "vp": ({"values": [1, 2, 3], "probabilities": [0.2, 0.3, 0.5]}, ("Categorical",)),
    "vl": ({"values": [[1, 2], [3]]}, ("Categorical",)),
    "c": ({"value": 7}, None),
    "nest": ({"parameters": {"a": {"min": 0.0, "max": 1.0}, "b": {"value": "k"}}}, None),
}


def test_every_wandb_distribution_is_optunas_with_the_same_values() -> None:
    from sweeps.params import HyperParameter

    warned: list[str] = []
    space = Space({name: spec for name, (spec, _) in WANDB.items()}, warn=warned.append)
    for name, (spec, expected) in WANDB.items():
        if expected is None or "parameters" in spec:
            continue
        dist = space.distributions[name]
        assert type(dist).__name__ == f"{expected[0]}Distribution", name
        if expected[0] != "Categorical":
            assert (dist.low, dist.high, dist.log, dist.step) == pytest.approx(expected[1:]), name
    assert space.distributions["nest.a"].high == 1.0 and "nest.b" not in space.distributions
    assert warned == ["key 'parameters.vp': Optuna's samplers take no probabilities: its values are searched as "
                      "plain values"]  # fmt: skip
    engine = OptunaEngine({"method": "custom", "metric": LOSS,
                           "parameters": {name: spec for name, (spec, _) in WANDB.items()}})  # fmt: skip
    configs = engine.dry_run(30)
    for config in configs:  # every value is one W&B can draw, typed as W&B types it, nested as W&B nests it
        assert config["c"] == 7 and config["nest"]["b"] == "k" and 0 <= config["nest"]["a"] <= 1
        assert config["v"] in ("sgd", "adam") and config["vl"] in ([1, 2], [3]) and config["vp"] in (1, 2, 3)
        assert config["qluv"] % 5 == 0 and isinstance(config["qluv"], int) and config["qu"] in (2, 4, 6, 8)
        assert (config["qlu"] / 0.5).is_integer() and config["quf"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        for name, (spec, expected) in WANDB.items():
            if expected is not None and expected[0] != "Categorical":
                param = HyperParameter(name, spec)
                low, high = sorted(float(param.ppf(p)) for p in (0.0, 1.0))
                assert low - 1e-9 <= config[name] <= high + 1e-9, (name, config[name])
    assert len({c["u"] for c in configs}) == len(configs)  # TPE proposes, it does not repeat


# ---------------------------------------------------------------- refusals and source errors, through the CLI


REFUSED = {
    "normal": ({"x": {"distribution": "normal", "mu": 1, "sigma": 0.5}},
               "key 'parameters.x': Optuna cannot sample distribution normal (its samplers need bounds); write "
               "distribution: uniform, min: -0.5, max: 2.5 (mu -+ 3 sigma)"),
    "q_normal": ({"x": {"distribution": "q_normal", "mu": 0, "sigma": 1, "q": 0.5}},
                 "write distribution: q_uniform, min: -3, max: 3, q: 0.5"),
    "log_normal": ({"x": {"distribution": "log_normal", "mu": 0, "sigma": 1}},
                   "write distribution: log_uniform_values, min: 0.0497871, max: 20.0855"),
    "q_log_normal": ({"x": {"distribution": "q_log_normal", "mu": 0, "sigma": 1, "q": 1}},
                     "write distribution: q_log_uniform_values, min: 0.0497871, max: 20.0855, q: 1"),
    "beta": ({"x": {"distribution": "beta", "a": 2, "b": 2}}, "write distribution: uniform, min: 0, max: 1"),
    "q_beta": ({"x": {"distribution": "q_beta", "a": 2, "b": 2, "q": 0.1}}, "q_uniform, min: 0, max: 1, q: 0.1"),
}  # fmt: skip
SOURCE_ERRORS = {
    "no file": ({"source": "nowhere.py"}, "key 'scheduler.source': {tmp}/nowhere.py: No such file or directory"),
    "no name": ({"source": "space.py", "optimizer": "missing"},
                "key 'scheduler.optimizer': {tmp}/space.py has no function 'missing' (it defines: asha, broken, opt, "
                "space, space_broken, two)"),
    "raises": ({"source": "space.py", "optimizer": "broken"},
               "key 'scheduler.optimizer': broken() raised ValueError: no sampler today"),
    "space raises": ({"source": "space.py", "search_space": "space_broken"},
                     "key 'scheduler.search_space': space_broken(trial) raised ZeroDivisionError: float division by "
                     "zero"),
    "bad syntax": ({"source": "bad.py"}, "key 'scheduler.source': {tmp}/bad.py:1: invalid syntax"),
    "pruner, two metrics": ({"source": "space.py", "optimizer": "asha"},
                            "asha() gives a pruner, but Optuna prunes only single-objective studies"),
}  # fmt: skip


def test_what_optuna_cannot_run_is_refused_at_create_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from ignite_sweep.cli import run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.py").write_text(SOURCE)
    (tmp_path / "bad.py").write_text("def (:\n")
    (tmp_path / "t.py").write_text("")  # the program the sweeps name (create warns of a missing one)
    cases: dict[str, Any] = {}
    for name, (parameters, message) in REFUSED.items():
        body = {"method": "custom", "scheduler": {"engine": "optuna"}, "metric": LOSS, "program": "t.py",
                "parameters": parameters}  # fmt: skip
        cases[name] = ("local", message, body)
    for name, (scheduler, message) in SOURCE_ERRORS.items():
        metrics = {"metrics": [LOSS, {"name": "other"}]} if "two metrics" in name else {"metric": LOSS}
        space = {} if "search_space" in scheduler else {"parameters": {"x": {"min": 0.0, "max": 1.0}}}
        body = {"method": "custom", "scheduler": {"engine": "optuna", **scheduler}, **metrics, "program": "t.py",
                **space}  # fmt: skip
        cases[name] = ("local", message, body)
    program = {"program": "t.py", "metric": LOSS, "parameters": {"x": {"min": 0.0, "max": 1.0}}}
    cases["ax"] = ("local", "key 'scheduler.engine': ax is not supported here; supported: optuna (method: custom), "
                   "wandb (method: grid | random | bayes)", {"method": "custom", "scheduler": {"engine": "ax"},
                                                             **program})  # fmt: skip
    cases["optuna with random"] = ("local", "key 'scheduler.engine': optuna needs method: custom",
                                   {"method": "random", "scheduler": {"engine": "optuna"}, **program})
    cases["on W&B"] = ("wandb", "key 'method': custom (Optuna) runs on the local backend only, not on W&B's; use "
                       "--backend local (its runs can be uploaded to W&B with `ignite-sweep sync`)",
                       {"method": "custom", "scheduler": {"engine": "optuna"}, **program})  # fmt: skip
    for name, (backend, message, body) in cases.items():  # the CLI's own code, in this process (imports once)
        path = tmp_path / f"{name.replace(' ', '-').replace(',', '')}.yaml"
        path.write_text(yaml.safe_dump(body))
        code = run(["create", str(path), "--backend", backend])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 1 and not captured.out, (name, captured)
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), (name, captured.err)
        assert message.format(tmp=tmp_path) in lines[0], (name, captured.err)
    # and as a user runs it: the executable, its exit status, one line and no traceback
    done = subprocess.run([sys.executable, "-m", "ignite_sweep", "create", str(tmp_path / "normal.yaml")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'normal.yaml'}: {REFUSED['normal'][1]}"]  # fmt: skip


# ---------------------------------------------------------------- through the agent loop, two agents


def test_tpe_sweep_with_two_agents_claims_each_trial_once(tmp_path: Path, offline_wandb: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = validate_sweep({"method": "custom", "scheduler": {"engine": "optuna"}, "metric": LOSS, "run_cap": 6,
                             "parameters": {"x": {"min": 0.0, "max": 1.0},
                                            "opt": {"parameters": {"lr": {"distribution": "log_uniform_values",
                                                                          "min": 1e-3, "max": 1.0}}}}},
                            for_function=True)  # fmt: skip
    backend = LocalBackend(LocalStore(url))
    sweep_id = backend.create(config)
    reasons = two_agents(url, sweep_id)
    runs = backend.store.runs(sweep_id.split("/")[1])
    assert "run_cap 6 reached" in reasons and backend.sweep(sweep_id).state == "finished"
    assert [r["state"] for r in runs] == ["finished"] * 6
    assert sorted(r["search_info"]["trial"] for r in runs) == list(range(6))  # each trial claimed once
    assert len({(r["config"]["x"], r["config"]["opt"]["lr"]) for r in runs}) == 6  # distinct trials
    assert all(1e-3 <= r["config"]["opt"]["lr"] <= 1 and r["summary"]["loss"] == r["config"]["x"] for r in runs)


def test_search_space_function_and_pruner_through_the_agent_loop(tmp_path: Path, offline_wandb: Path) -> None:
    """Trials 0..3 draw small, big, small, big (TPE's startup draws, seeded per trial); the threshold pruner
    stops the big ones (loss >= 2 > 1) at their first evaluation: ``stopped``, as hyperband's stops are."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = custom(tmp_path, run_cap=4, parameters={"fixed": {"value": 3}},
                    scheduler={"engine": "optuna", "source": "space.py", "optimizer": "opt", "search_space": "space"})
    assert "def space(trial)" in config["scheduler"]["source_code"]  # kept: agents elsewhere run the same code
    (tmp_path / "space.py").unlink()  # ... and need not have the file
    backend = LocalBackend(LocalStore(url))
    sweep_id = backend.create(config)
    two_agents(url, sweep_id)
    runs = backend.store.runs(sweep_id.split("/")[1], with_history=True)
    assert [r["config"]["kind"] for r in runs] == ["small", "big", "small", "big"]
    for run in runs:  # the conditional space: n only for big, x in its kind's range
        small = run["config"]["kind"] == "small"
        assert set(run["config"]) == ({"kind", "x", "fixed"} if small else {"kind", "x", "n", "fixed"})
        assert (0 <= run["config"]["x"] <= 0.5) if small else (2 <= run["config"]["x"] <= 3)
        assert run["state"] == ("finished" if small else "stopped"), run
        assert len(run["history"]) == (3 if small else 1) or not small  # pruned before its last evaluation
    assert sorted(r["search_info"]["trial"] for r in runs) == [0, 1, 2, 3]


# ---------------------------------------------------------------- the engine and the store, claim by claim


def claimed(backend: LocalBackend, sweep_id: str) -> dict[str, Any]:
    run, reason = backend.claim(sweep_id)
    assert run is not None, reason
    return run


def test_asha_keeps_its_rungs_in_the_store(tmp_path: Path) -> None:
    """Successive halving compares a run with the rung values other runs reached: those live on their trials (as
    system attributes), so the engine keeps them in the store; a study rebuilt without them would promote all."""
    backend = LocalBackend(LocalStore(tmp_path / "store.db"))
    sweep_id = backend.create(custom(tmp_path, parameters={"x": {"min": 0.0, "max": 1.0}},
                                     scheduler={"engine": "optuna", "source": "space.py", "optimizer": "asha"}))
    good, bad = claimed(backend, sweep_id), claimed(backend, sweep_id)
    assert backend.report(good["id"], {"loss": 0.1}) is False
    assert backend.store.run(good["id"])["search_info"]["system_attrs"] == {"completed_rung_0": 0.1}
    assert backend.report(bad["id"], {"loss": 0.9}) is True  # worse than the rung's best: pruned
    assert backend.store.run(bad["id"])["should_stop"] == 1 and not backend.store.run(good["id"])["should_stop"]


def test_a_crashed_run_is_run_again_as_the_same_trial(tmp_path: Path) -> None:
    backend = LocalBackend(LocalStore(tmp_path / "store.db"))
    sweep_id = backend.create(custom(tmp_path, parameters={"x": {"min": 0.0, "max": 1.0}}))
    first = claimed(backend, sweep_id)
    backend.store.end_run(first["id"], "crashed", error="killed")
    again = claimed(backend, sweep_id)
    assert again["retry_of"] == first["id"] and again["config"] == first["config"]
    engine = backend.engine(backend.store.sweep(sweep_id.split("/")[1]))
    study, _ = engine.study(backend.store.runs(sweep_id.split("/")[1]), "s", history=False)
    crashed, rerun = study.trials
    assert (crashed.state.name, rerun.state.name) == ("FAIL", "RUNNING")  # TPE's constant liar sees the re-run
    assert rerun.params == {"x": first["config"]["x"]}
    backend.store.end_run(again["id"], "finished", summary={"loss": 0.25})
    study, _ = engine.study(backend.store.runs(sweep_id.split("/")[1]), "s", history=False)
    assert study.trials[1].state.name == "COMPLETE" and study.trials[1].value == 0.25
    assert claimed(backend, sweep_id)["config"]["x"] != first["config"]["x"]


def test_metrics_make_a_multi_objective_study(tmp_path: Path) -> None:
    backend = LocalBackend(LocalStore(tmp_path / "store.db"))
    config = custom(tmp_path, metric=None, metrics=[LOSS, {"name": "other", "goal": "maximize"}],
                    parameters={"x": {"min": 0.0, "max": 1.0}},
                    scheduler={"engine": "optuna", "source": "space.py", "optimizer": "two"})
    sweep_id = backend.create(config)
    for x in (0.2, 0.6):
        run = claimed(backend, sweep_id)
        backend.store.end_run(run["id"], "finished", summary={"loss": x, "other": x / 2})
    engine = backend.engine(backend.store.sweep(sweep_id.split("/")[1]))
    study, _ = engine.study(backend.store.runs(sweep_id.split("/")[1]), "s", history=False)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert [t.values for t in study.trials] == [[0.2, 0.1], [0.6, 0.3]]
    assert len(study.best_trials) == 2  # both on the Pareto front


def test_the_builtin_trainer_checks_optunas_suggestions_at_create() -> None:
    """Each parameter's own values pass; two together do not (warm-up as long as the run), and only the engine's
    dry-run suggestions, built into TrainConfigs, find it."""
    config = {"method": "custom", "scheduler": {"engine": "optuna"}, "metric": {"name": "val/accuracy"},
              "parameters": {**FAST, "lr_schedule": {"value": "warmup-cosine"}, "epochs": {"values": [2, 4]},
                             "warmup_epochs": {"min": 0.5, "max": 2.5}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"^sweep config: key 'parameters.warmup_epochs': got \S+, allowed: less than "
                       r"epochs \(2\) \(Optuna's suggestion \d+ of 12\)$"):  # fmt: skip
        validate_sweep(config)
    config["parameters"]["warmup_epochs"]["max"] = 1.5
    assert validate_sweep(config)["command"][-1] == "${args}"


def test_an_agents_kept_study_is_the_store_rebuilt() -> None:
    """An agent keeps its study between claims and tells it only what changed; after runs start, end, crash and
    a claim that never made a run, it holds what a study rebuilt from the store holds, and suggests the same."""
    import random

    config = {"method": "custom", "metric": LOSS, "parameters": {"x": {"min": 0.0, "max": 1.0},
                                                                 "c": {"values": ["a", "b", "c"]}}}  # fmt: skip
    kept, rng, runs = OptunaEngine(config), random.Random(0), []
    for i in range(40):
        chosen = kept.next_suggestion(runs, "s")
        if i == 25:  # its transaction rolled back: no run has this trial, the next claim asks for the number again
            continue
        runs.append({"id": f"r{i}", "seq": len(runs) + 1, "state": "running", "retry_of": None, "summary": {},
                     "config": chosen.params, "search_info": chosen.search_info})  # fmt: skip
        ended = runs[rng.randrange(len(runs))]
        if ended["state"] == "running":
            ended.update(state=rng.choice(["finished", "stopped", "crashed"]), summary={"loss": rng.random()})
    chosen = kept.next_suggestion(runs, "s")
    rebuilt = OptunaEngine(config)
    assert chosen.params == rebuilt.next_suggestion(runs, "s").params
    fresh = rebuilt.study(runs, "s", history=False)[0].trials
    held = kept._kept["s"].study.trials[: len(runs)]
    assert [(t.state, t.values, t.params) for t in held] == [(t.state, t.values, t.params) for t in fresh]
