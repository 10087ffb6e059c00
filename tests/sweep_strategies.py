"""Hypothesis strategies for W&B sweep configs over this project's hyperparameter names: every method, every
distribution W&B documents (and the deprecated ones it still accepts), hyperband forms, run_cap, metric
target. Most draws are plausible for the hyperparameter they name (so acceptance is exercised), the rest
are wrong in every way the spec lets a file be wrong (so refusals are too)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from ignite_sweep.training.config import LOGGED_METRICS, LR_SCHEDULES, OPTIMIZERS

# name -> (kind, low, high): the range a sensible sweep draws from
DOMAINS: dict[str, tuple[str, Any, Any]] = {
    "lr": ("float", 1e-4, 0.5), "momentum": ("float", 0.0, 0.99), "weight_decay": ("float", 0.0, 0.1),
    "dropout": ("float", 0.0, 0.9), "warmup_epochs": ("float", 0.0, 0.9), "lr_gamma": ("float", 0.05, 1.0),
    "batch_size": ("int", 8, 256), "val_batch_size": ("int", 64, 1024), "epochs": ("int", 1, 4),
    "seed": ("int", 0, 1000), "patience": ("int", 0, 5), "log_interval": ("int", 1, 100),
    "lr_step_epochs": ("int", 1, 3), "optimizer": ("choice", OPTIMIZERS, None),
    "lr_schedule": ("choice", LR_SCHEDULES, None), "nesterov": ("bool", None, None), "amp": ("bool", None, None),
}  # fmt: skip
NAMES = list(DOMAINS)

junk_scalars = st.one_of(st.integers(-5, 5), st.floats(-2, 2, allow_nan=False), st.sampled_from(["", "x", "rmsprop"]),
                         st.booleans(), st.none(), st.lists(st.integers(0, 3), max_size=2))  # fmt: skip
q = st.one_of(st.integers(min_value=1, max_value=16), st.sampled_from([0.5, 0.01, 1.0, 2.0]), st.just(0))


def good_value(name: str) -> st.SearchStrategy[Any]:
    kind, lo, hi = DOMAINS[name]
    if kind == "float":
        return st.floats(lo, hi, allow_nan=False).map(lambda x: round(x, 6))
    if kind == "int":
        return st.integers(lo, hi)
    if kind == "choice":
        return st.sampled_from(lo)
    return st.booleans()


def value(name: str, junk: bool) -> st.SearchStrategy[Any]:
    return st.one_of(*[good_value(name)] * 12, junk_scalars) if junk else good_value(name)


@st.composite
def parameter(draw: Any, name: str, junk: bool = True) -> dict[str, Any]:
    kind_of_field, lo, hi = DOMAINS[name]
    numeric = kind_of_field in ("float", "int")
    kinds = ["value", "constant", "values", "probabilities"] * 4 + (["empty", "junk"] if junk else [])
    if numeric:
        kinds += ["int_uniform", "uniform", "bare_range", "q_uniform", "log_uniform_values", "q_log_uniform_values",
                  "inv_log_uniform_values", "normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta",
                  "log_uniform", "inv_log_uniform", "q_log_uniform"] * 3  # fmt: skip
    kind = draw(st.sampled_from(kinds))
    if kind == "value":
        return {"value": draw(value(name, junk))}
    if kind == "constant":
        return {"distribution": "constant", "value": draw(value(name, junk))}
    if kind in ("values", "probabilities"):
        options = draw(st.lists(value(name, junk), min_size=draw(st.sampled_from([0, 1, 1, 1] if junk else [1])),
                                max_size=4))
        spec: dict[str, Any] = {"values": options}
        if kind == "probabilities":
            n = len(options)
            even = [1 / n] * n if n else []
            anything = st.lists(st.floats(0, 1), min_size=n, max_size=n)
            spec["probabilities"] = draw(st.one_of(st.just(even), st.just(even), anything) if junk else st.just(even))
            if draw(st.booleans()):
                spec["distribution"] = draw(st.sampled_from(["categorical_w_probabilities", "categorical"][: 1 + junk]))
        return spec
    if kind == "empty":
        return {}
    if kind == "junk":
        return {draw(st.sampled_from(["values", "min", "mu", "distribution", "max"])): draw(junk_scalars)}
    a, b = draw(good_value(name)), draw(good_value(name))
    if draw(st.integers(0, 20)) or not junk:  # usually ordered
        a, b = min(a, b), max(a, b)
    if not junk and a == b:
        b = a + 1
    spec = {"distribution": kind, "min": a, "max": b}
    if kind == "bare_range":
        spec = {"min": a, "max": b}
    elif kind == "int_uniform":
        spec = {"distribution": kind, "min": int(a), "max": int(b)}
    elif "log_uniform_values" in kind:
        spec = {"distribution": kind, "min": max(a, 1e-5), "max": max(b, 2e-5)}
    elif kind in ("log_uniform", "inv_log_uniform", "q_log_uniform"):
        spec = {"distribution": kind, "min": -6.0, "max": draw(st.floats(-5.9, 1.0).map(lambda x: round(x, 3)))}
    elif kind.endswith("normal"):
        spec = {"distribution": kind, "mu": a, "sigma": draw(st.floats(1e-3, 1.0).map(lambda x: round(x, 4)))}
    elif kind.endswith("beta"):
        spec = {"distribution": kind, "a": draw(st.floats(0.1, 5)), "b": draw(st.floats(0.1, 5))}
    if kind.startswith("q_"):
        spec["q"] = draw(q if junk else st.sampled_from([1, 2, 0.5, 0.01]))
    return spec


hyperband = st.one_of(
    *[st.fixed_dictionaries({"type": st.just("hyperband"), "min_iter": st.integers(1, 3)},
                            optional={"eta": st.sampled_from([2, 3, 1.5])})] * 6,
    st.fixed_dictionaries({"type": st.just("hyperband"), "min_iter": st.integers(1, 3)},
                          optional={"eta": st.one_of(st.integers(2, 4), st.just(1.5)), "strict": st.booleans()}),
    st.fixed_dictionaries({"type": st.just("hyperband"), "max_iter": st.integers(1, 12), "s": st.integers(0, 4)},
                          optional={"eta": st.integers(2, 4)}),
    st.just({"type": "hyperband"}),
    st.just({"type": "hyperband", "min_iter": 0}),
    st.just({"type": "envelope", "min_iter": 1}),
)  # fmt: skip
valid_hyperband = st.fixed_dictionaries(
    {"type": st.just("hyperband"), "min_iter": st.integers(1, 3)}, optional={"eta": st.sampled_from([2, 3, 1.5])}
)
valid_metric = st.fixed_dictionaries(
    {"name": st.sampled_from(list(LOGGED_METRICS))},
    optional={"goal": st.sampled_from(["maximize", "minimize"]), "target": st.floats(0, 1)},
)
metric = st.fixed_dictionaries(
    {"name": st.sampled_from([*LOGGED_METRICS] * 5 + ["accuracy"])},
    optional={"goal": st.sampled_from(["maximize", "minimize"] * 10 + ["up"]),
              "target": st.one_of(*[st.floats(0, 1)] * 10, st.just("high"))},
)  # fmt: skip


@st.composite
def sweep_config(draw: Any, junk: bool = True) -> dict[str, Any]:
    """A sweep config; with ``junk=False`` every part has a shape the spec allows (values may still be out of
    a hyperparameter's range, as a user's may)."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    config: dict[str, Any] = {
        "method": draw(st.sampled_from(["grid", "random", "bayes"] * 10 + ["hyperopt"] * junk)),
        "parameters": {"dataset": {"value": "digits"}, **{name: draw(parameter(name, junk)) for name in names}},
    }
    if draw(st.integers(0, 20)) or not junk:  # usually a metric
        config["metric"] = draw(metric if junk else valid_metric)
    if draw(st.booleans()):
        config["run_cap"] = draw(st.one_of(*[st.integers(1, 20)] * 10, *[st.integers(-1, 0)] * junk))
    if draw(st.integers(0, 3)) == 0:
        config["early_terminate"] = draw(hyperband if junk else valid_hyperband)
    return config
