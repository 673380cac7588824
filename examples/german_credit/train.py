"""Train the German-credit example model and write what the gateway registers.

    python examples/german_credit/train.py [--out DIR]

reads ``data/german.csv`` (UCI Statlog German Credit Data, see ``data/README.md``), turns the
A-codes into the readable category values that ``features.toml`` declares, trains a gradient-boosted
tree pipeline, prints a held-out AUC, refits on all 1,000 rows and writes to DIR (default: this folder):

- ``model.skops``     the fitted scikit-learn pipeline (``skops.io.dump``)
- ``background.csv``  100 raw rows (readable values, header = feature names), the SHAP baseline
- ``manifest.toml``   ``features.toml`` + ``artifact``, ``sha256``, ``explanation.background`` and
                      ``explanation.background_sha256`` (paths relative to the manifest)

The mapping from A-codes to readable values lives only in ``CODES`` below; ``check_schema`` refuses to
train when it and ``features.toml`` disagree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io
import tomli_w
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "german.csv"
FEATURES_TOML = HERE / "features.toml"

SEED = 0
TEST_SIZE = 0.25
BACKGROUND_ROWS = 100

MODEL_FILE = "model.skops"
BACKGROUND_FILE = "background.csv"
MANIFEST_FILE = "manifest.toml"

# The 20 attributes in the column order of german.csv (attributes 1..20 of german.names).
COLUMNS: list[str] = [
    "checking_status",
    "duration_months",
    "credit_history",
    "purpose",
    "credit_amount",
    "savings",
    "employment_since",
    "installment_rate",
    "personal_status_sex",
    "other_debtors",
    "residence_since",
    "property",
    "age",
    "other_installment_plans",
    "housing",
    "existing_credits",
    "job",
    "num_dependents",
    "telephone",
    "foreign_worker",
]
TARGET = "outcome"
# Column 21 of german.csv: 1 = good, 2 = bad.
TARGET_CODES: dict[int, str] = {1: "good", 2: "bad"}

# A-code -> readable category value, for every code that german.names defines (A47 and A95 are defined
# there but never occur in the data). The order of each dict is the order of `categories` in features.toml.
CODES: dict[str, dict[str, str]] = {
    "checking_status": {
        "A11": "lt_0",  # ... < 0 DM
        "A12": "0_to_200",  # 0 <= ... < 200 DM
        "A13": "ge_200",  # ... >= 200 DM / salary assignments for at least 1 year
        "A14": "no_account",  # no checking account
    },
    "credit_history": {
        "A30": "no_credits_or_all_paid",  # no credits taken / all credits paid back duly
        "A31": "all_paid_this_bank",  # all credits at this bank paid back duly
        "A32": "existing_paid_duly",  # existing credits paid back duly till now
        "A33": "past_delays",  # delay in paying off in the past
        "A34": "critical_account",  # critical account / other credits existing (not at this bank)
    },
    "purpose": {
        "A40": "car_new",
        "A41": "car_used",
        "A42": "furniture_equipment",
        "A43": "radio_television",
        "A44": "domestic_appliances",
        "A45": "repairs",
        "A46": "education",
        "A47": "vacation",  # "(vacation - does not exist?)" in german.names; not in the data
        "A48": "retraining",
        "A49": "business",
        "A410": "other",
    },
    "savings": {
        "A61": "lt_100",  # ... < 100 DM
        "A62": "100_to_500",  # 100 <= ... < 500 DM
        "A63": "500_to_1000",  # 500 <= ... < 1000 DM
        "A64": "ge_1000",  # ... >= 1000 DM
        "A65": "unknown_or_none",  # unknown / no savings account
    },
    "employment_since": {
        "A71": "unemployed",
        "A72": "lt_1_year",
        "A73": "1_to_4_years",
        "A74": "4_to_7_years",
        "A75": "ge_7_years",
    },
    "personal_status_sex": {
        "A91": "male_divorced_separated",
        "A92": "female_divorced_separated_married",
        "A93": "male_single",
        "A94": "male_married_widowed",
        "A95": "female_single",  # not in the data
    },
    "other_debtors": {
        "A101": "none",
        "A102": "co_applicant",
        "A103": "guarantor",
    },
    "property": {
        "A121": "real_estate",
        "A122": "savings_agreement_or_life_insurance",  # building society savings agreement / life insurance
        "A123": "car_or_other",  # car or other, not in attribute 6
        "A124": "unknown_or_none",
    },
    "other_installment_plans": {
        "A141": "bank",
        "A142": "stores",
        "A143": "none",
    },
    "housing": {
        "A151": "rent",
        "A152": "own",
        "A153": "for_free",
    },
    "job": {
        "A171": "unskilled_non_resident",  # unemployed / unskilled - non-resident
        "A172": "unskilled_resident",
        "A173": "skilled",  # skilled employee / official
        "A174": "highly_qualified",  # management / self-employed / highly qualified employee / officer
    },
    "telephone": {
        "A191": "no",  # none
        "A192": "yes",  # yes, registered under the customer's name
    },
    "foreign_worker": {
        "A201": "yes",
        "A202": "no",
    },
}
# Protected attributes: never model inputs (AI Law Art. 17(3): no discriminatory classification). Sex is
# derived from personal_status_sex and declared monitor_only in features.toml, for the fairness figures.
PROTECTED: tuple[str, ...] = ("personal_status_sex", "foreign_worker")
INPUTS: list[str] = [c for c in COLUMNS if c not in PROTECTED]
MONITORED: list[str] = ["sex"]
CATEGORICAL: list[str] = [c for c in INPUTS if c in CODES]
NUMERIC: list[str] = [c for c in INPUTS if c not in CODES]


def sex_of(personal_status_sex: str) -> str:
    """'female' or 'male', from the readable personal_status_sex value."""
    return personal_status_sex.split("_", 1)[0]

GENERATED_KEYS = ("artifact", "sha256")
GENERATED_EXPLANATION_KEYS = ("background", "background_sha256")
LANGS = ("kk", "ru", "en")


class SchemaMismatch(ValueError):
    """features.toml and the code mapping in this file disagree."""


# --------------------------------------------------------------------------------------------------
# schema


def load_schema(path: Path = FEATURES_TOML) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def check_schema(schema: dict[str, Any]) -> None:
    """Raise SchemaMismatch unless features.toml declares exactly COLUMNS, with CODES' categories."""
    problems: list[str] = []
    for key in GENERATED_KEYS:
        if key in schema:
            problems.append(f"{key!r} is generated by train.py and must not be in features.toml")
    for key in GENERATED_EXPLANATION_KEYS:
        if key in schema.get("explanation", {}):
            problems.append(f"'explanation.{key}' is generated by train.py and must not be in features.toml")
    features = schema.get("features", [])
    names = [f.get("name") for f in features]
    if names != INPUTS + MONITORED:
        problems.append(f"features must be, in this order, {INPUTS + MONITORED}; features.toml has {names}")
    for feature in features:
        if feature.get("name") in MONITORED:
            if feature.get("monitor_only") is not True:
                problems.append(f"{feature.get('name')}: must be monitor_only = true")
            continue
        name = feature.get("name")
        kind = feature.get("type")
        labels = feature.get("labels", {})
        missing = [lang for lang in LANGS if not labels.get(lang)]
        if missing:
            problems.append(f"{name}: labels missing {missing}")
        if name in CODES:
            expected = list(CODES[name].values())
            if kind != "category":
                problems.append(f"{name}: CODES maps it, so its type must be 'category', not {kind!r}")
            if feature.get("categories") != expected:
                problems.append(f"{name}: categories {feature.get('categories')} != CODES values {expected}")
            category_labels = feature.get("category_labels", {})
            if set(category_labels) != set(expected):
                problems.append(f"{name}: category_labels cover {sorted(category_labels)}, need exactly {expected}")
            for value, text in category_labels.items():
                missing = [lang for lang in LANGS if not text.get(lang)]
                if missing:
                    problems.append(f"{name}: category_labels.{value} missing {missing}")
        elif kind != "number":
            problems.append(f"{name}: not in CODES, so its type must be 'number', not {kind!r}")
    if problems:
        raise SchemaMismatch("features.toml does not agree with train.py:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------------------------------
# data


def load_data(path: Path = DATA, schema: dict[str, Any] | None = None, *,
              protected: bool = False) -> tuple[pd.DataFrame, pd.Series]:
    """Return (X with readable values and the model inputs as columns, y as 'good'/'bad').

    `protected=True` keeps every column of german.csv, the protected ones too (`monitored` derives sex from
    them); a model is never fitted on those.
    """
    raw = pd.read_csv(path, sep=",", header=None, names=[*COLUMNS, TARGET], dtype=str)
    if len(raw.columns) != len(COLUMNS) + 1 or raw.isna().any().any():
        raise ValueError(f"{path}: expected {len(COLUMNS) + 1} complete columns")
    X = pd.DataFrame(index=raw.index)
    for column in COLUMNS:
        if column in CODES:
            unknown = sorted(set(raw[column]) - set(CODES[column]))
            if unknown:
                raise ValueError(f"{path}: column {column} has codes {unknown} that CODES does not map")
            X[column] = raw[column].map(CODES[column]).astype(object)
        else:
            X[column] = raw[column].astype(np.int64)
    y = raw[TARGET].astype(int).map(TARGET_CODES)
    if y.isna().any():
        raise ValueError(f"{path}: outcome must be 1 or 2")
    y = y.astype(object).rename(TARGET)
    if schema is not None:
        _check_domains(X, schema)
    return (X if protected else X[INPUTS]), y


def _check_domains(X: pd.DataFrame, schema: dict[str, Any]) -> None:
    """The data must satisfy the declared domains, or the gateway would refuse its own training rows."""
    for feature in schema["features"]:
        if feature["type"] != "number" or feature.get("monitor_only"):
            continue
        column = X[feature["name"]]
        lo, hi = feature.get("min", -math.inf), feature.get("max", math.inf)
        if column.min() < lo or column.max() > hi:
            raise SchemaMismatch(f"{feature['name']}: data range {column.min()}..{column.max()} is outside {lo}..{hi}")


# --------------------------------------------------------------------------------------------------
# model


def make_pipeline() -> Pipeline:
    preprocess = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("numeric", "passthrough", NUMERIC),
        ]
    )
    model = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=SEED)
    return Pipeline([("preprocess", preprocess), ("model", model)])


def holdout_auc(X: pd.DataFrame, y: pd.Series) -> float:
    """AUC of P(good) on a stratified 25 % split (seed 0), trained on the other 75 %."""
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=TEST_SIZE, stratify=y, random_state=SEED
    )
    pipe = make_pipeline().fit(X_train, y_train)
    good = list(pipe.classes_).index("good")
    return float(roc_auc_score(y_test == "good", pipe.predict_proba(X_test)[:, good]))


def monitored(X: pd.DataFrame) -> pd.DataFrame:
    """The monitor-only values (sex) of each row of `load_data(protected=True)`, for tests and fairness figures."""
    return pd.DataFrame({"sex": X["personal_status_sex"].map(sex_of)}, index=X.index)


def background_rows(X: pd.DataFrame, y: pd.Series, n: int = BACKGROUND_ROWS) -> pd.DataFrame:
    """n raw rows, stratified by outcome, seed 0, in data order."""
    sample, _ = train_test_split(X, train_size=n, stratify=y, random_state=SEED)
    return sample.sort_index()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# manifest


def build_manifest(schema: dict[str, Any], model_sha256: str, background_sha256: str) -> dict[str, Any]:
    manifest: dict[str, Any] = {}
    for key, value in schema.items():
        manifest[key] = value
        if key == "adapter":
            manifest["artifact"] = MODEL_FILE
            manifest["sha256"] = model_sha256
    manifest.setdefault("artifact", MODEL_FILE)
    manifest.setdefault("sha256", model_sha256)
    explanation = dict(schema.get("explanation", {}))
    explanation["background"] = BACKGROUND_FILE
    explanation["background_sha256"] = background_sha256
    manifest["explanation"] = explanation
    return manifest


def _validate_with_gateway(manifest_path: Path) -> bool:
    """Validate against gateway.manifest.Manifest when the project package is importable."""
    root = str(HERE.parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        from gateway.manifest import load_manifest
    except ImportError as exc:  # training must not depend on the service being importable
        print(f"note: gateway.manifest not importable ({exc}); manifest not validated", file=sys.stderr)
        return False
    load_manifest(manifest_path)
    return True


def train(out_dir: Path = HERE, *, verbose: bool = True) -> Path:
    """Train, write model.skops, background.csv and manifest.toml to out_dir; return the manifest path."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = load_schema()
    check_schema(schema)
    X, y = load_data(schema=schema)

    auc = holdout_auc(X, y)
    pipe = make_pipeline().fit(X, y)
    if list(pipe.classes_) != ["bad", "good"]:
        raise AssertionError(f"unexpected classes {pipe.classes_}")

    model_path = out_dir / MODEL_FILE
    skops.io.dump(pipe, model_path, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    background_path = out_dir / BACKGROUND_FILE
    background_rows(X, y).to_csv(background_path, index=False, lineterminator="\n")

    manifest = build_manifest(schema, sha256_file(model_path), sha256_file(background_path))
    manifest_path = out_dir / MANIFEST_FILE
    manifest_path.write_text(tomli_w.dumps(manifest), encoding="utf-8")
    validated = _validate_with_gateway(manifest_path)

    if verbose:
        summary = {
            "rows": len(X),
            "holdout_auc": round(auc, 4),
            "holdout": f"stratified {int(TEST_SIZE * 100)} %, random_state={SEED}",
            "manifest": str(manifest_path),
            "manifest_validated": validated,
            "untrusted_types": skops.io.get_untrusted_types(file=model_path),
            "seconds": round(time.perf_counter() - started, 2),
        }
        print(json.dumps(summary, indent=2))
    return manifest_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    train(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
