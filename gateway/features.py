"""Check raw feature values against a model's declared schema; build the frame the model scores."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import pandas as pd

from gateway.errors import ValidationFailed
from gateway.manifest import Feature, Manifest

FLOAT_MAX = sys.float_info.max


def _problem(field: str, rule: str, message: str) -> dict[str, str]:
    return {"field": field, "rule": rule, "message": message}


def check_value(feature: Feature, value: Any, field: str) -> dict[str, str] | None:
    """Return a problem naming the field and the rule, or None when the value is valid."""
    if feature.type == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _problem(field, "type", f"must be a number, got {type(value).__name__}")
        # An integer beyond the float range (JSON has no limit) is no number the model can take either.
        if isinstance(value, int) and not -FLOAT_MAX <= value <= FLOAT_MAX:
            return _problem(field, "finite", "must be a finite number within the range of a double")
        if not math.isfinite(value):
            return _problem(field, "finite", "must be a finite number")
        if feature.integer and float(value) != int(value):
            return _problem(field, "integer", f"must be a whole number, got {value}")
        if feature.min is not None and value < feature.min:
            return _problem(field, "min", f"must be at least {feature.min:g}, got {value}")
        if feature.max is not None and value > feature.max:
            return _problem(field, "max", f"must be at most {feature.max:g}, got {value}")
    elif feature.type == "category":
        if not isinstance(value, str):
            return _problem(field, "type", f"must be a string (one of the categories), got {type(value).__name__}")
        assert feature.categories is not None
        if value not in feature.categories:
            return _problem(field, "category", f"must be one of {feature.categories}, got {value!r}")
    elif not isinstance(value, bool):
        return _problem(field, "type", f"must be true or false, got {type(value).__name__}")
    return None


def validate_features(manifest: Manifest, values: dict[str, Any], prefix: str = "features") -> dict[str, Any]:
    """Return the values in schema order, or raise ValidationFailed listing every problem."""
    problems: list[dict[str, str]] = []
    known = {f.name for f in manifest.features}
    for name in sorted(set(values) - known):
        problems.append(
            _problem(f"{prefix}.{name}", "unknown", f"model {manifest.name} {manifest.version} has no feature {name!r}")
        )
    row: dict[str, Any] = {}
    for feature in manifest.features:
        field = f"{prefix}.{feature.name}"
        if feature.name not in values:
            problems.append(_problem(field, "required", "is required"))
            continue
        problem = check_value(feature, values[feature.name], field)
        if problem:
            problems.append(problem)
        else:
            row[feature.name] = values[feature.name]
    if problems:
        raise ValidationFailed(f"{len(problems)} invalid field(s)", details=problems)
    return row


# An int the fast check takes as is: float(value) == int(value) and within a double's range (beyond, `check_value`
# has rules of its own for it; the full check then runs).
_EXACT_INT = 2**53


def _fast_check(feature: Feature) -> Callable[[Any], bool]:
    """A test that is True only for values `check_value` finds valid (exact JSON types, in range). False means
    "not known to be valid": the full check then runs and says what is wrong, so its messages stay the only ones."""
    if feature.type == "number":
        lo = -math.inf if feature.min is None else feature.min
        hi = math.inf if feature.max is None else feature.max
        integer = feature.integer
        isfinite = math.isfinite

        def number(value: Any) -> bool:
            kind = type(value)
            if kind is float:
                return lo <= value <= hi and isfinite(value) and (not integer or value.is_integer())
            return kind is int and -_EXACT_INT <= value <= _EXACT_INT and lo <= value <= hi

        return number
    if feature.type == "category":
        assert feature.categories is not None
        categories = frozenset(feature.categories)
        return lambda value: type(value) is str and value in categories
    return lambda value: type(value) is bool


class FeatureValidator:
    """`validate_features` compiled once for a manifest, for many rows (a decision batch).

    A row whose every value is of its exact type and within its rules is taken without building any problem;
    any other row goes through `validate_features` itself, so a row's errors are always that function's.
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._checks = tuple((f.name, _fast_check(f)) for f in manifest.features)

    def __call__(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values in schema order, or raise ValidationFailed as `validate_features` does."""
        if len(values) == len(self._checks):  # as many values as features: none unknown if none is missing
            row: dict[str, Any] = {}
            for name, ok in self._checks:
                value = values.get(name, _MISSING)
                if value is _MISSING or not ok(value):
                    break
                row[name] = value
            else:
                return row
        return validate_features(self.manifest, values)


_MISSING = object()


def validate_monitoring(manifest: Manifest, values: dict[str, Any], prefix: str = "monitoring") -> dict[str, Any]:
    """Check monitor-only values against `manifest.monitored` (each optional); raise ValidationFailed naming
    every problem. They are collected for fairness figures only and never reach the model."""
    problems: list[dict[str, str]] = []
    known = {f.name: f for f in manifest.monitored}
    for name in sorted(set(values) - set(known)):
        problems.append(_problem(f"{prefix}.{name}", "unknown",
                                 f"model {manifest.name} {manifest.version} monitors no feature {name!r}"))
    row: dict[str, Any] = {}
    for name, feature in known.items():
        if name in values:
            problem = check_value(feature, values[name], f"{prefix}.{name}")
            if problem:
                problems.append(problem)
            else:
                row[name] = values[name]
    if problems:
        raise ValidationFailed(f"{len(problems)} invalid field(s)", details=problems)
    return row


def to_records(manifest: Manifest, rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The values the model scores, one list per row: schema column order, numbers as float, categories as str."""
    numeric = [f.type == "number" for f in manifest.features]
    names = [f.name for f in manifest.features]
    return [[float(row[n]) if is_number else row[n] for n, is_number in zip(names, numeric, strict=True)]
            for row in rows]


def to_frame(manifest: Manifest, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Build the DataFrame the model scores: `to_records` as a frame with the schema's column names."""
    return pd.DataFrame.from_records(to_records(manifest, rows), columns=[f.name for f in manifest.features])


def example_row(manifest: Manifest) -> dict[str, Any]:
    """Return a valid row made from the schema alone (for smoke tests of a registered model)."""
    row: dict[str, Any] = {}
    for f in manifest.features:
        if f.type == "number":
            lo = f.min if f.min is not None else 0.0
            hi = f.max if f.max is not None else lo + 1.0
            mid = (lo + hi) / 2
            row[f.name] = float(round(mid)) if f.integer else mid
        elif f.type == "category":
            assert f.categories is not None
            row[f.name] = f.categories[0]
        else:
            row[f.name] = False
    return row
