"""W&B's sweep schema, explained: each violation as one line naming the key path and what is allowed.

The schema and its extra checks are the ``sweeps`` engine's (``schema_violations_from_proposed_config``);
its raw messages (``{'values': []} is not valid under any of the given schemas``) say neither where nor why,
so each jsonschema error is walked down to the branch the user meant.
"""

from __future__ import annotations

import re
from typing import Any

TYPES = {"number": "a number", "integer": "an integer", "string": "a string", "object": "a mapping",
         "array": "a list", "boolean": "true or false"}  # fmt: skip


def _schema() -> tuple[Any, dict[str, Any]]:
    from ignite_sweep.engine import sweeps_engine

    sweeps_engine()
    from sweeps.config.schema import validator

    return validator, validator.schema["definitions"]


def schema_problems(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(violations, deprecations) of a sweep config, each one line starting with its key path."""
    from ignite_sweep.engine import sweeps_engine

    validator, _ = _schema()
    problems = [explain(error) for error in validator.iter_errors(config)]
    if problems:
        return problems, []
    engine = sweeps_engine()
    from sweeps.params import PARAM_DEPRECATION_MAP

    deprecations = tuple(PARAM_DEPRECATION_MAP.values())
    deprecated = []
    for message in engine.schema_violations_from_proposed_config(config):
        where, rest = _name_first(message)
        line = f"key 'parameters.{where}': {rest}" if where in config.get("parameters", {}) else message
        (deprecated if message.endswith(deprecations) else problems).append(line)
    return problems, deprecated


def _name_first(message: str) -> tuple[str, str]:
    """The engine's own checks start with the parameter's name ('lr: min 1 is not less than max 0.1')."""
    match = re.match(r"(?:Parameter )?([A-Za-z_][A-Za-z0-9_.-]*):? (.*)", message)
    return (match.group(1), match.group(2)) if match else ("", message)


def _path(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path)


def explain(error: Any) -> str:
    """One jsonschema error -> "key 'a.b': what is wrong, what is allowed"."""
    path = _path(error)
    if error.validator in ("anyOf", "oneOf"):
        parts = path.split(".")
        if len(parts) >= 2 and parts[-2] == "parameters" and isinstance(error.instance, dict):
            return _explain_parameter(error.instance, path)
        branches = error.validator_value
        if all(set(b) == {"required"} for b in branches):
            needs = " | ".join(" and ".join(b["required"]) for b in branches)
            return f"key '{path}': needs one of: {needs}"
        inner = [e for e in error.context if e.validator not in ("anyOf", "oneOf") or e.context]
        if inner:
            from jsonschema.exceptions import best_match

            return explain(best_match(inner))
    return f"key '{path}': {_describe(error)}" if path else _describe(error)


def _describe(error: Any) -> str:
    v, value, instance = error.validator, error.validator_value, error.instance
    if v == "enum":
        return f"got {instance!r}, allowed: {' | '.join(map(str, value))}"
    if v == "type":
        kinds = value if isinstance(value, list) else [value]
        return f"got {instance!r}, allowed: {' or '.join(TYPES.get(k, k) for k in kinds)}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"got {instance!r}, allowed: {op} {value}"
    if v == "minItems":
        return f"got {instance!r}, allowed: a list of at least {value}"
    if v == "minProperties":
        return f"needs at least {value} entry"
    if v == "required":
        missing = [k for k in value if k not in instance]
        return f"missing {', '.join(missing)}"
    if v == "additionalProperties":
        extra = sorted(set(instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(error.schema.get("properties", {}))
        return f"unknown key {', '.join(map(repr, extra))}; allowed: {allowed}"
    if v == "propertyNames":
        return f"name {instance!r} is not allowed: letters, digits, _ . - (starting with a letter or _)"
    return error.message.splitlines()[0]


def _closest(errors: list[Any]) -> Any:
    """The error of the branch closest to valid: fewest missing keys, a wrong value before a pedantic format
    (W&B's `float` format refuses an int bound in one of uniform's variants), then jsonschema's relevance."""
    from jsonschema.exceptions import best_match

    def distance(error: Any) -> tuple[bool, int]:
        missing = sum(k not in error.instance for k in error.validator_value) if error.validator == "required" else 0
        return error.validator == "format", missing

    closest = min(distance(e) for e in errors)
    return best_match([e for e in errors if distance(e) == closest])


def _distributions() -> dict[str, list[str]]:
    """distribution name -> the schema definitions that describe it, read from the schema itself."""
    _, definitions = _schema()
    found: dict[str, list[str]] = {}
    for ref in definitions["parameter"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[1]
        definition = definitions[name]
        for branch in definition.get("anyOf", [definition]):
            for dist in branch.get("properties", {}).get("distribution", {}).get("enum", []):
                if name not in found.setdefault(dist, []):
                    found[dist].append(name)
    return dict(sorted(found.items()))


def _explain_parameter(spec: dict[str, Any], path: str) -> str:
    """The branch the user meant (by its ``distribution``, else by its keys), and why the spec fails it."""
    from jsonschema import Draft7Validator

    validator, definitions = _schema()
    distributions = _distributions()
    dist = spec.get("distribution")
    if dist is not None and (not isinstance(dist, str) or dist not in distributions):
        return f"key '{path}.distribution': got {dist!r}, allowed: {' | '.join(distributions)}"
    if "probabilities" in spec:
        meant, what = ["param_categorical_w_probabilities"], "values with probabilities"
    elif dist is not None:
        meant = distributions[dist]
        what = f"distribution {dist}"
    elif "value" in spec:
        meant, what = ["param_single_value"], "value"
    elif "values" in spec:
        meant, what = ["param_categorical"], "values"
    elif "parameters" in spec:
        meant, what = ["param_dict"], "nested parameters"
    elif "min" in spec or "max" in spec:
        ints = all(isinstance(spec.get(b), int) for b in ("min", "max"))
        meant, what = ["param_int_uniform" if ints else "param_uniform"], "min/max"
    else:
        return f"key '{path}': give value, values, min/max or a distribution with its parameters"
    for name in meant:
        schema = {"$ref": f"#/definitions/{name}", "definitions": definitions}
        errors = list(Draft7Validator(schema, format_checker=validator.format_checker).iter_errors(spec))
        if not errors:
            continue
        error = _closest(errors)
        while error.context:
            error = _closest(error.context)
        where = ".".join([path, *map(str, error.absolute_path)])
        return f"key '{where}': {_describe(error)} ({what})"
    return f"key '{path}': {spec!r} is not a parameter W&B's schema allows"
