"""Optuna behind the search interface: W&B's ``method: custom`` with ``scheduler: {engine: optuna}``, run locally.

The store stays the single truth. At each suggestion the engine has an in-memory Optuna study of the sweep's runs,
in their order, so a run's trial number is its ``seq - 1`` (built once per agent and kept in step with what changed
since its last claim: ``runs_now``, ``Kept``; rebuilt whole when they disagree, and with a pruner): a running run is
a RUNNING trial (TPE's constant liar sees it), a finished one COMPLETE with its summary's value(s), a ``stopped``
one PRUNED when the sweep has a pruner (else COMPLETE), the rest FAIL; then ``study.ask()``, inside the store's
write lock, so two agents never get the same trial. What Optuna drew (its params, their distributions and the
trial's system attributes, which samplers such as NSGA-II and pruners such as ASHA keep there) is kept with the run
as its ``search_info``; a re-run of a crashed or interrupted run is the same trial again (its original's params).

Without ``source``: TPE (multivariate, constant liar, seeded; ``read_once_tpe``: Optuna's suggestions, each finished
trial read once) over ``parameters:`` (``optuna_space``). With
``source`` (a Python file next to the sweep file; ``create`` keeps its text in the stored config, so agents on
other machines run the same code): ``optimizer`` returns the sampler, (sampler, pruner), or an
``optuna.create_study(...)`` result (its sampler, pruner and directions; its storage is ignored); ``search_space``
takes an Optuna trial and calls ``trial.suggest_*`` (define-by-run: conditional and nested parameters).

Sampling is repeatable: before each suggestion the sampler's random generators are reseeded from its own seed and
the trial's number. A pruner judges every running run at its latest evaluation whenever a run reports (as W&B's
hyperband does); it is told nothing else, and what it keeps on a trial goes back into the store.
"""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any

from ignite_sweep.engine import is_number, plain
from ignite_sweep.errors import ConfigError
from ignite_sweep.search.base import SearchEngine, Suggestion
from ignite_sweep.search.optuna_space import Space

DEFAULT_SEED = 0
DRY_RUN_SUGGESTIONS = 12
"""``create``'s dry run: more than TPE's 10 random startup trials, so its model is exercised too."""
SEED_STRIDE = 1_000_003


def optuna() -> Any:
    try:
        import optuna as module
    except ImportError:
        raise ConfigError("key 'scheduler.engine': optuna is not installed here; pip install 'ignite-sweep[optuna]'"
                          ) from None  # fmt: skip
    module.logging.set_verbosity(module.logging.WARNING)
    return module


def objectives(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric name, goal) of each objective: ``metrics:`` (multi-objective) or ``metric``."""
    metrics = config.get("metrics") or ([config["metric"]] if config.get("metric") else [])
    return [(str(m["name"]), str(m.get("goal") or "minimize")) for m in metrics]


def _raised(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class Source:
    """The sweep's ``scheduler.source``: its text executed as a module (the file's own path as ``__file__``)."""

    def __init__(self, scheduler: dict[str, Any]) -> None:
        self.file = str(scheduler.get("source_file") or scheduler["source"])
        code = scheduler.get("source_code")
        if code is None:
            try:
                code = Path(self.file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"key 'scheduler.source': {self.file}: {exc.strerror}") from None
        self.module = types.ModuleType(f"ignite_sweep_source_{Path(self.file).stem}")
        self.module.__file__ = self.file
        folder = str(Path(self.file).resolve().parent)
        added = folder not in sys.path and Path(folder).is_dir()
        if added:  # the file's own imports of files next to it
            sys.path.insert(0, folder)
        try:
            exec(compile(code, self.file, "exec"), self.module.__dict__)  # noqa: S102 - the user's own sweep code
        except SyntaxError as exc:
            raise ConfigError(f"key 'scheduler.source': {self.file}:{exc.lineno}: {exc.msg}") from None
        except Exception as exc:  # noqa: BLE001 - whatever the file raises, in one line
            raise ConfigError(f"key 'scheduler.source': importing {self.file} raised {_raised(exc)}") from None
        finally:
            if added:
                sys.path.remove(folder)

    def function(self, key: str, name: str) -> Any:
        found = getattr(self.module, name, None)
        if not callable(found):
            defined = sorted(n for n, v in vars(self.module).items()
                             if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) ==
                             self.module.__name__)  # fmt: skip
            raise ConfigError(f"key 'scheduler.{key}': {self.file} has no function {name!r} "
                              f"(it defines: {', '.join(defined) or 'none'})")  # fmt: skip
        return found


class OptunaEngine(SearchEngine):
    exhausted = "the Optuna sampler has no more suggestions"

    def __init__(self, config: dict[str, Any], warn: Any = None) -> None:
        super().__init__(config)
        self.optuna = optuna()
        scheduler = config.get("scheduler") or {}
        self.objectives = objectives(config)
        if not self.objectives:
            raise ConfigError("key 'metric': method custom needs a metric (or metrics:) for Optuna to optimise")
        source = Source(scheduler) if scheduler.get("source") else None
        self.search_space = source.function("search_space", scheduler["search_space"]) if (
            source and scheduler.get("search_space")) else None  # fmt: skip
        self.space = Space(config.get("parameters") or {}, warn)
        if self.search_space is not None and self.space.distributions:
            name = next(iter(self.space.distributions))
            raise ConfigError(f"key 'parameters.{name}': the search space is scheduler.search_space's; give only "
                              "fixed values (value: ...) here, or define it there")  # fmt: skip
        if self.search_space is None and not self.space.distributions:
            raise ConfigError("key 'parameters': needs a parameter that varies (values or a distribution), "
                              "or a scheduler.search_space function")  # fmt: skip
        directions = ["maximize" if goal == "maximize" else "minimize" for _, goal in self.objectives]
        self.sampler, self.pruner = self._optimizer(source, scheduler.get("optimizer"), directions)
        self.directions = directions
        self._rngs = _rng_holders(self.sampler)
        self._kept: dict[str, Kept] = {}  # study name -> its study as this agent last asked it
        self._read: dict[str, ReadRuns] = {}  # sweep id -> its runs as this agent last read them
        self._base_seed = int(self._rngs[0].randint(2**31)) if self._rngs else DEFAULT_SEED

    # ------------------------------------------------------------ what the sweep's source file says

    def _optimizer(self, source: Source | None, name: str | None, directions: list[str]) -> tuple[Any, Any]:
        """(sampler, pruner or None): the ``optimizer`` function's, else seeded multivariate TPE, constant liar."""
        op = self.optuna
        if source is None or not name:
            from ignite_sweep.search.optuna_tpe import read_once_tpe

            tpe = read_once_tpe() if int(op.__version__.split(".")[0]) >= 5 else op.samplers.TPESampler
            return tpe(multivariate=True, constant_liar=True, seed=DEFAULT_SEED), None
        function = source.function("optimizer", name)
        try:
            made = function()
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"key 'scheduler.optimizer': {name}() raised {_raised(exc)}") from None
        pruner = None
        if isinstance(made, op.Study):
            given = [d.name.lower() for d in made.directions]
            if given != directions:
                raise ConfigError(f"key 'scheduler.optimizer': {name}()'s study optimises {given}, the sweep's "
                                  f"metric goals say {directions}; make them agree")  # fmt: skip
            sampler, pruner = made.sampler, made.pruner
        elif isinstance(made, tuple) and len(made) == 2:
            sampler, pruner = made
        else:
            sampler = made
        if not isinstance(sampler, op.samplers.BaseSampler) or not (
                pruner is None or isinstance(pruner, op.pruners.BasePruner)):  # fmt: skip
            raise ConfigError(f"key 'scheduler.optimizer': {name}() returned {type(made).__name__}; allowed: an Optuna "
                              "sampler, (sampler, pruner), or a study from optuna.create_study")  # fmt: skip
        if isinstance(pruner, op.pruners.NopPruner):
            pruner = None
        if pruner is not None and len(directions) > 1:
            raise ConfigError(f"key 'scheduler.optimizer': {name}() gives a pruner, but Optuna prunes only single-"
                              "objective studies (this sweep has metrics:); return the sampler alone")  # fmt: skip
        return sampler, pruner

    # ------------------------------------------------------------ the search interface

    def suggest(self, store: Any, db: Any, sweep: dict[str, Any], prepared: Any, k: int = 1) -> list[Suggestion]:
        if self.pruner is None:
            runs = self.runs_now(store, db, sweep["id"])
        else:  # the pruner's view needs every run's history (and its search info, which it changes)
            runs = store.runs(sweep["id"], with_history=True)
        suggestions = []
        for _ in range(k):
            chosen = self.next_suggestion(runs, sweep["id"])
            suggestions.append(chosen)
            runs.append({"id": f"next{len(runs)}", "seq": len(runs) + 1, "state": "running", "retry_of": None,
                         "config": chosen.params, "summary": {}, "search_info": chosen.search_info})  # fmt: skip
        return suggestions

    def stops(self, store: Any, db: Any, sweep_id: str) -> list[str]:
        """The pruner's judgement of every running run at its latest evaluation; what it keeps on a trial (ASHA's
        rung values) goes back into the run's ``search_info``."""
        if self.pruner is None:
            return []
        runs = store.runs(sweep_id, with_history=True)
        study, infos = self.study(runs, sweep_id, history=True)
        stops = []
        for run, trial, info in zip(runs, study.get_trials(deepcopy=False), infos, strict=True):
            if run["state"] != "running" or run.get("should_stop") or trial.last_step is None or info is None:
                continue
            before = dict(trial.system_attrs)
            try:
                pruned = self.pruner.prune(study, trial)
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"key 'scheduler.optimizer': its pruner raised {_raised(exc)}") from None
            after = study._storage.get_trial_system_attrs(trial._trial_id)
            if after != before:
                store.set_search_info(db, run["id"], {**info, "system_attrs": plain(after)})
            if pruned:
                stops.append(run["id"])
        return stops

    # ------------------------------------------------------------ Optuna's view of the store

    def runs_now(self, store: Any, db: Any, sweep_id: str) -> list[dict[str, Any]]:
        """The sweep's runs (no history) as the store holds them now, read as they changed since this agent's last
        read: the runs made since (by seq), and those running then or now (the store changes a run's state and
        summary only while it runs: a result never changes). All of them at the first read, and again whenever the
        two disagree (seqs not 1..n). A new list: the caller may extend it."""
        read = self._read.get(sweep_id)
        if read is None or not read.catch_up(store, db, sweep_id):
            read = self._read[sweep_id] = ReadRuns(store.runs(sweep_id))
        return list(read.runs)

    def next_suggestion(self, runs: list[dict[str, Any]], name: str) -> Suggestion:
        """The next trial, asked of the study of ``runs`` (the sweep's, in order)."""
        kept = self._kept_study(runs, name) if self.pruner is None else None
        study = kept.study if kept else self.study(runs, name, history=self.pruner is not None)[0]
        number = len(runs)
        for i, rng in enumerate(self._rngs):  # repeatable, and never two trials from one generator state
            rng.seed((self._base_seed + SEED_STRIDE * number + i) % 2**32)
        try:
            config, info = self._ask(study, number)
        except BaseException:
            self._kept.pop(name, None)  # its last trial is no run's
            raise
        if kept:
            kept.asked(info)
        return Suggestion(plain(config), search_info=info)

    def _ask(self, study: Any, number: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the run's config, its search info) of a new trial of ``study``."""
        from optuna.distributions import distribution_to_json

        trial = study.ask(None if self.search_space is not None else self.space.distributions)
        if self.search_space is None:
            config = self.space.config(trial.params)
        else:
            try:
                returned = self.search_space(trial)
            except Exception as exc:  # noqa: BLE001
                function = self.config["scheduler"]["search_space"]
                raise ConfigError(f"key 'scheduler.search_space': {function}(trial) raised {_raised(exc)}") from None
            config = {**self.space.constants, **self._defined(returned, trial)}
        frozen = study._storage.get_trial(trial._trial_id)
        attrs = plain(frozen.system_attrs)
        info = {"engine": "optuna", "trial": number, "params": plain(frozen.params), "system_attrs": attrs,
                "sampled": attrs}
        if self.search_space is not None:  # define-by-run: each trial's own (parameters: the sweep's, below)
            info["distributions"] = {n: distribution_to_json(d) for n, d in frozen.distributions.items()}
        return config, info

    def _defined(self, returned: Any, trial: Any) -> dict[str, Any]:
        name = self.config["scheduler"]["search_space"]
        if returned is not None and not isinstance(returned, dict):
            raise ConfigError(f"key 'scheduler.search_space': {name}(trial) returned {type(returned).__name__}; "
                              "allowed: nothing (the run's config is what it suggested) or a dict")  # fmt: skip
        config = dict(trial.params) if returned is None else returned
        if not config:
            raise ConfigError(f"key 'scheduler.search_space': {name}(trial) suggested no parameters")
        try:
            json.dumps(plain(config))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"key 'scheduler.search_space': {name}(trial) returned a config that is not "
                              f"JSON ({_raised(exc)})") from None  # fmt: skip
        return config

    def study(self, runs: list[dict[str, Any]], name: str, history: bool) -> tuple[Any, list[Any]]:
        """An in-memory study of ``runs`` (one trial each, in order) and the search info each trial came from."""
        op = self.optuna
        study = op.create_study(study_name=f"ignite-sweep-{name}", directions=self.directions, sampler=self.sampler,
                                pruner=self.pruner or op.pruners.NopPruner())  # fmt: skip
        by_id = {run["id"]: run for run in runs}
        infos = [self._info(run, by_id) for run in runs]
        study.add_trials([self._trial(run, info, history) for run, info in zip(runs, infos, strict=True)])
        return study, infos

    def _kept_study(self, runs: list[dict[str, Any]], name: str) -> Kept:
        """The study this agent asked last, brought up to date with ``runs`` (running trials that ended are told,
        new runs added): a claim reads the runs but builds only what changed. Rebuilt whole when it and the store
        disagree (its last trial's claim rolled back, say)."""
        kept = self._kept.get(name)
        if kept is None or not kept.matches(runs):
            study, _ = self.study(runs, name, history=False)
            kept = self._kept[name] = Kept(study, runs)
            return kept
        changed = [i for i, state in enumerate(kept.states) if state != runs[i]["state"]]
        if any(kept.states[i] != "running" for i in changed):  # an end its claim rolled back: not what it told
            study, _ = self.study(runs, name, history=False)
            kept = self._kept[name] = Kept(study, runs)
            return kept
        by_id = {run["id"]: run for run in runs}
        trials = kept.study.get_trials(deepcopy=False)
        for i in changed:
            ended = self._trial(runs[i], self._info(runs[i], by_id), history=False)
            kept.study._storage.set_trial_state_values(trials[i]._trial_id, ended.state, ended.values)
            kept.states[i] = runs[i]["state"]
        new = runs[len(kept.ids):]
        kept.study.add_trials([self._trial(run, self._info(run, by_id), history=False) for run in new])
        kept.ids += [run["id"] for run in new]
        kept.states += [run["state"] for run in new]
        return kept

    @staticmethod
    def _info(run: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        """The trial a run is: its own search info, or (a re-run) its original's as it was sampled."""
        info = run.get("search_info")
        if isinstance(info, dict) and "params" in info:
            return info
        original = by_id.get(run.get("retry_of") or "")
        seen = set()
        while original is not None and original["id"] not in seen:
            seen.add(original["id"])
            found = original.get("search_info")
            if isinstance(found, dict) and "params" in found:
                return {**found, "system_attrs": found.get("sampled") or {}}
            original = by_id.get(original.get("retry_of") or "")
        return None

    def _trial(self, run: dict[str, Any], info: dict[str, Any] | None, history: bool) -> Any:
        op = self.optuna
        from optuna.distributions import json_to_distribution

        state = op.trial.TrialState
        if info is None:  # not the engine's (made before it): no params Optuna can learn from
            return op.trial.create_trial(state=state.FAIL)
        params = info["params"]
        if "distributions" in info:
            distributions = {n: _distribution(d, json_to_distribution) for n, d in info["distributions"].items()}
        else:
            distributions = {n: d for n, d in self.space.distributions.items() if n in params}
        common = {"params": params, "distributions": distributions, "system_attrs": info.get("system_attrs") or {}}
        steps = self._steps(run) if history else {}
        if run["state"] == "running":
            return op.trial.create_trial(state=state.RUNNING, intermediate_values=steps, **common)
        if run["state"] == "stopped" and self.pruner is not None:
            return op.trial.create_trial(state=state.PRUNED, intermediate_values=steps, **common)
        values = self._values(run) if run["state"] in ("finished", "stopped") else None
        if values is None:
            return op.trial.create_trial(state=state.FAIL, **common)
        return op.trial.create_trial(state=state.COMPLETE, values=values, intermediate_values=steps, **common)

    def _values(self, run: dict[str, Any]) -> list[float] | None:
        """A result's value on each objective: its summary's (else its last logged), None when one is missing."""
        values = []
        for name, _ in self.objectives:
            value = (run.get("summary") or {}).get(name)
            if not is_number(value):
                logged = [h[name] for h in run.get("history") or [] if is_number(h.get(name))]
                value = logged[-1] if logged else None
            if value is None:
                return None
            values.append(float(value))
        return values

    def _steps(self, run: dict[str, Any]) -> dict[int, float]:
        """The run's evaluations as Optuna's intermediate values: step n is the n-th valid value of the metric."""
        metric = self.objectives[0][0]
        values = [float(h[metric]) for h in run.get("history") or [] if is_number(h.get(metric))]
        return {step: value for step, value in enumerate(values, start=1) if not math.isnan(value)}

    # ------------------------------------------------------------ create's dry run

    def dry_run(self, n: int = DRY_RUN_SUGGESTIONS) -> list[dict[str, Any]]:
        """``n`` suggestions, each fed back as a finished run with made-up results (and, with a pruner, one running
        run judged): what ``create`` builds into configs and reports in one line if the user's code raises."""
        runs: list[dict[str, Any]] = []
        for i in range(n):
            chosen = self.next_suggestion(runs, "dry-run")
            summary = {name: 0.5 + ((i * 7) % n) / (10 * n) for name, _ in self.objectives}
            history = [{name: value - 0.01 * (3 - step) for name, value in summary.items()} for step in range(3)]
            runs.append({"id": f"dry{i}", "seq": i + 1, "state": "finished", "retry_of": None, "config": chosen.params,
                         "summary": summary, "history": history, "search_info": chosen.search_info})  # fmt: skip
        if self.pruner is not None and runs:
            runs[-1] = {**runs[-1], "state": "running", "history": runs[-1]["history"][:2]}
            study, _ = self.study(runs, "dry-run", history=True)
            try:
                self.pruner.prune(study, study.get_trials(deepcopy=False)[-1])
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"key 'scheduler.optimizer': its pruner raised {_raised(exc)}") from None
        return [run["config"] for run in runs]


class ReadRuns:
    """A sweep's runs as an agent last read them (``OptunaEngine.runs_now``): in seq order, and the ids of those
    running then."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self.position = {run["id"]: i for i, run in enumerate(runs)}
        self.running = {run["id"] for run in runs if run["state"] == "running"}

    def catch_up(self, store: Any, db: Any, sweep_id: str) -> bool:
        """Read what changed since: the runs made after the last one read, and again each run that was running or
        is running now (a few indexed reads). False when what the store holds is not these runs and more (a seq
        missing, a running run not read): read it all again."""
        if self.runs and self.runs[-1]["seq"] != len(self.runs):
            return False
        new = store.runs_after(sweep_id, len(self.runs))
        if any(run["seq"] != len(self.runs) + 1 + i for i, run in enumerate(new)):
            return False
        for run in new:
            self.position[run["id"]] = len(self.runs)
            self.runs.append(run)
        running = {row.id for row in store.running_scores(db, sweep_id)}
        fresh = {run["id"] for run in new}
        again = sorted((self.running ^ running) - fresh)
        if any(run_id not in self.position for run_id in again):
            return False
        for run in store.runs_by_id(again):
            self.runs[self.position[run["id"]]] = run
        self.running = running
        return all(self.runs[self.position[run_id]]["state"] == "running" for run_id in running)


class Kept:
    """A study kept between claims: per trial, the run it is (None: asked here, its run not read yet) and that
    run's state when last read."""

    def __init__(self, study: Any, runs: list[dict[str, Any]]) -> None:
        self.study = study
        self.ids: list[str | None] = [run["id"] for run in runs]
        self.states = [run["state"] for run in runs]
        self._asked: dict[int, dict[str, Any]] = {}

    def asked(self, info: dict[str, Any]) -> None:
        self._asked[len(self.ids)] = info
        self.ids.append(None)
        self.states.append("running")

    def matches(self, runs: list[dict[str, Any]]) -> bool:
        """Whether the store's runs begin with this study's trials (the one asked here is the next run's)."""
        if len(self.ids) > len(runs):
            return False
        for i, known in enumerate(self.ids):
            if known is None:
                info = runs[i].get("search_info") or {}
                asked = self._asked.pop(i, None) or {}
                if info.get("trial") != i or info.get("params") != asked.get("params"):
                    return False
                self.ids[i] = runs[i]["id"]
            elif known != runs[i]["id"]:
                return False
        return True


def _distribution(stored: str, load: Any, cache: dict[str, Any] = {}) -> Any:  # noqa: B006 - a cache on purpose
    if stored not in cache:
        cache[stored] = load(stored)
    return cache[stored]


def _rng_holders(sampler: Any, depth: int = 0) -> list[Any]:
    """The numpy generators a sampler draws with (its own and its fallback sampler's), to reseed per trial."""
    import numpy as np

    found: list[Any] = []
    for value in vars(sampler).values():
        if isinstance(value, np.random.RandomState):
            found.append(value)
        elif isinstance(getattr(type(value), "rng", None), property):  # Optuna's LazyRandomState
            found.append(value.rng)
        elif depth < 3 and type(value).__module__.startswith("optuna.samplers") and hasattr(value, "__dict__"):
            found += _rng_holders(value, depth + 1)
    return found


def check_sweep(config: dict[str, Any], folder: Path, warn: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``create``'s checks of a ``method: custom`` sweep for Optuna: (the config to store, with the source file's
    text kept in it, so agents elsewhere run the same code; the configs of a dry run). One ConfigError per problem:
    a distribution Optuna cannot sample, the source file or a name in it missing, a function that raises, a
    ``metrics:`` objective with a target (the sweep's target is one metric's: ``metric.target``)."""
    metrics = config.get("metrics") if isinstance(config.get("metrics"), list) else []
    for i, metric in enumerate(metrics):
        if isinstance(metric, dict) and "target" in metric:
            raise ConfigError(f"key 'metrics.{i}.target': a target needs a single objective (metric:); a metrics: "
                              "sweep runs to its run_cap, or until `ignite-sweep stop`")  # fmt: skip
    scheduler = dict(config.get("scheduler") or {})
    stored = dict(config)
    if scheduler.get("source"):
        path = Path(str(scheduler["source"])).expanduser()
        path = path if path.is_absolute() else folder / path
        try:
            scheduler["source_code"] = path.read_text(encoding="utf-8")
            scheduler["source_file"] = str(path.resolve())
        except OSError as exc:
            if "source_code" not in scheduler:  # a stored config checked again keeps its text
                raise ConfigError(f"key 'scheduler.source': {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"key 'scheduler.source': {path}: not a UTF-8 Python file") from None
        stored["scheduler"] = scheduler
    engine = OptunaEngine(stored, warn=warn)
    return stored, engine.dry_run()
