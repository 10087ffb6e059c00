"""The Optuna engine's default sampler (``optuna_engine``): Optuna's TPE, each finished trial read once."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def read_once_tpe() -> type:
    """The default sampler's class: Optuna's ``TPESampler`` (its 5.x ``_sample``, the only one this is used with),
    suggesting exactly what it suggests, with what it reads of each finished trial read once.

    At every ask TPE goes over all the study's trials in Python, twice (to split them into the good and the rest by
    value, and to turn each one's params into its internal representation): most of a claim at 10,000 runs. A
    finished trial never changes (Optuna's in-memory storage refuses to update one, and replaces a trial's object
    when its state changes), so its kind, value and represented params are kept by trial id, used only while the
    study holds that very object; the split sorts the kept values. No trial is left out and nothing is
    approximated: every trial still counts, as Optuna counts it (tests/test_optuna_scale.py compares suggestions
    with Optuna's own sampler's). Only a sweep without ``scheduler.optimizer`` gets it; a user's sampler runs as
    given."""
    from operator import attrgetter

    import numpy as np
    from optuna.samplers import TPESampler
    from optuna.samplers._tpe import sampler as tpe
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    by_number = attrgetter("number")

    class ReadOnceTPESampler(TPESampler):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._rows: dict[int, tuple[Any, str, float | None, int]] = {}  # trial id -> a finished trial's row
            self._reprs: dict[tuple[Any, ...], dict[int, tuple[Any, tuple[Any, ...] | None]]] = {}

        def _sample(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
            states = [TrialState.COMPLETE, TrialState.PRUNED] + ([TrialState.RUNNING] if self._constant_liar else [])
            trials = study._get_trials(deepcopy=False, states=states, use_cache=not self._constant_liar)
            if self._constant_liar:
                trials = [t for t in trials if t.number != trial.number]
            if self._gamma is None:
                self._gamma = tpe.default_gamma if len(study.directions) <= 1 else tpe.default_gamma_multiobjective
            split = self._split(study, trials)
            if split is None:  # a value a sort cannot order (NaN): Optuna's own way
                return super()._sample(study, trial, search_space)
            below = self._build_parzen_estimator(study, search_space, split[0], handle_below=True)
            above = self._build_parzen_estimator(study, search_space, split[1], handle_below=False)
            samples = below.sample(self._rng.rng, self._n_ei_candidates)
            chosen = self._compare(samples, self._compute_acquisition_func(samples, below, above))
            for name, distribution in search_space.items():
                chosen[name] = distribution.to_external_repr(chosen[name])
            return chosen

        def _row(self, trial: Any) -> tuple[Any, str, float | None, int]:
            """(the trial, its kind as Optuna's split sees it, its first value, its number); a finished one's kept."""
            if trial.state == TrialState.RUNNING:
                return trial, "running", None, trial.number
            kind = "infeasible" if tpe._get_infeasible_trial_score(trial) > 0 else trial.state.name.lower()
            row = self._rows[trial._trial_id] = (trial, kind, trial.values[0] if trial.values else None, trial.number)
            return row

        def _split(self, study: Any, trials: list[Any]) -> tuple[list[Any], list[Any]] | None:
            """Optuna's ``_split_trials``: (the good trials, the rest), each in trial-number order."""
            kinds: dict[str, list[Any]] = {"running": [], "infeasible": [], "complete": [], "pruned": []}
            values, numbers = [], []
            for trial in trials:
                row = self._rows.get(trial._trial_id)
                if row is None or row[0] is not trial:
                    row = self._row(trial)
                kinds[row[1]].append(trial)
                numbers.append(row[3])
                if row[1] == "complete":
                    values.append(row[2])
            n_below = self._gamma(len(trials) - len(kinds["running"]))
            complete = kinds["complete"]
            if len(study.directions) > 1:
                good, _ = tpe._split_complete_trials(complete, study, n_below)
            else:
                keys = np.asarray(values, dtype=float)
                if np.isnan(keys).any():
                    return None
                order = np.argsort(-keys if study.direction == StudyDirection.MAXIMIZE else keys, kind="stable")
                good = [complete[i] for i in order[:n_below]]  # sorted() is stable too, also with reverse=True
            pruned, _ = tpe._split_pruned_trials(kinds["pruned"], study, max(0, n_below - len(good)))
            n_left = max(0, n_below - len(good) - len(pruned))
            infeasible, _ = tpe._split_infeasible_trials(kinds["infeasible"], n_left)
            chosen = {id(trial) for trial in good + pruned + infeasible}
            below, above = [], []
            for trial in trials:
                (below if id(trial) in chosen else above).append(trial)
            if numbers != sorted(numbers):  # not in number order (an in-memory study's trials are)
                below.sort(key=by_number)
                above.sort(key=by_number)
            return below, above

        def _get_internal_repr(self, trials: list[Any], search_space: dict[str, Any], study: Any) -> dict[str, Any]:
            kept = self._reprs.setdefault(tuple(search_space.items()), {})
            rows = []
            for trial in trials:
                hit = kept.get(trial._trial_id)
                if hit is None or hit[0] is not trial:
                    params = self._get_params(trial, study)
                    row = tuple(d.to_internal_repr(params[n]) for n, d in search_space.items()) if (
                        search_space.keys() <= params.keys()) else None  # fmt: skip
                    hit = (trial, row)
                    if trial.state.is_finished():
                        kept[trial._trial_id] = hit
                if hit[1] is not None:
                    rows.append(hit[1])
            columns = list(zip(*rows, strict=True)) if rows else [() for _ in search_space]
            return {name: np.asarray(column) for name, column in zip(search_space, columns, strict=True)}

    return ReadOnceTPESampler
