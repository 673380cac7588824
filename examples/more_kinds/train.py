"""Train the multi-class and regression examples and write what the gateway registers.

    python examples/more_kinds/train.py [--out DIR]

Both use the German-credit example's data and feature schema (examples/german_credit: data/german.csv,
features.toml, the A-code mapping in train.py); nothing is downloaded.

- ``german-credit-tiers`` (multi-class): a risk tier - low (repaid, loan of at most 12 months), medium
  (repaid, longer loan), high (not repaid as agreed) - from a random forest. Each tier has its own outcome
  (approved, approved with conditions, declined; the last two are adverse). The decision's explanation
  explains the probability of the decided tier, exactly (TreeSHAP per class), in the decision's transaction.
- ``german-credit-amount`` (regression): the loan amount (in DM, the data's currency) that applications
  like this one were granted, from gradient-boosted regression trees, with every feature but the amount;
  the amount falls in a band (small, standard, large; small is adverse). Explained in DM by the
  model-agnostic explainer, by the explain job after the decision commits.

Each goes to DIR/<name>/ (default: this folder): model.skops, background.csv, manifest.toml.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import skops.io
import tomli_w
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

HERE = Path(__file__).resolve().parent
GERMAN = HERE.parent / "german_credit" / "train.py"
SEED = 0
TIERS = "german-credit-tiers"
AMOUNT = "german-credit-amount"
EXAMPLES = (TIERS, AMOUNT)


#: The tiers' policy: each tier its own outcome; the last two adverse.
TIERS_POLICY: dict[str, Any] = {
    "kind": "multiclass",
    "classes": [{"class": "low", "outcome": "approved"}, {"class": "medium", "outcome": "conditional"},
                {"class": "high", "outcome": "declined"}],
    "adverse_outcomes": ["conditional", "declined"],
    "outcome_labels": {
        "approved": {"kk": "Мақұлданды", "ru": "Одобрено", "en": "Approved"},
        "conditional": {"kk": "Шарттармен мақұлданды", "ru": "Одобрено с условиями", "en": "Approved with conditions"},
        "declined": {"kk": "Бас тартылды", "ru": "Отказано", "en": "Declined"},
    },
}
#: The amount's policy: bands in DM, small is adverse.
AMOUNT_POLICY: dict[str, Any] = {
    "kind": "regression",
    "unit": {"kk": "DM", "ru": "DM", "en": "DM"},
    "bands": [[1500.0, "small"], [4000.0, "standard"], [float("inf"), "large"]],
    "adverse_outcomes": ["small"],
    "outcome_labels": {
        "small": {"kk": "Шағын сома", "ru": "Небольшая сумма", "en": "Small amount"},
        "standard": {"kk": "Стандартты сома", "ru": "Стандартная сумма", "en": "Standard amount"},
        "large": {"kk": "Үлкен сома", "ru": "Крупная сумма", "en": "Large amount"},
    },
}


def german() -> Any:
    """The German-credit example's training module (data loading, schema, codes)."""
    spec = importlib.util.spec_from_file_location("german_credit_train_kinds", GERMAN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tier_of(X: pd.DataFrame, y: pd.Series) -> pd.Series:
    """The tier label: high when not repaid as agreed, else low for loans of at most 12 months, else medium."""
    tier = pd.Series("medium", index=X.index, dtype=object)
    tier[(y == "good") & (X["duration_months"] <= 12)] = "low"
    tier[y == "bad"] = "high"
    return tier


def _notice(kk: str, ru: str, en: str, schema: dict[str, Any]) -> dict[str, Any]:
    notice = copy.deepcopy(schema["notice"])
    example = {"kk": "ТЕК МЫСАЛ, 1994 жылғы неміс деректерінде оқытылған; нақты адамдар туралы шешімдерге арналмаған. ",
               "ru": "ТОЛЬКО ПРИМЕР, обучен на немецких данных 1994 года; не для решений о реальных людях. ",
               "en": "EXAMPLE ONLY, trained on German data from 1994; not for decisions about real people. "}
    notice["purpose"] = {"kk": example["kk"] + kk, "ru": example["ru"] + ru, "en": example["en"] + en}
    notice["functions"] = notice["purpose"]
    return notice


def _write(out: Path, pipe: Pipeline, background: pd.DataFrame, manifest: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model_path, background_path = out / "model.skops", out / "background.csv"
    skops.io.dump(pipe, model_path, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    background.to_csv(background_path, index=False, lineterminator="\n")
    manifest["artifact"], manifest["sha256"] = model_path.name, hashlib.sha256(model_path.read_bytes()).hexdigest()
    manifest["explanation"] = {**manifest.get("explanation", {}), "background": background_path.name,
                               "background_sha256": hashlib.sha256(background_path.read_bytes()).hexdigest()}
    path = out / "manifest.toml"
    path.write_text(tomli_w.dumps(manifest), encoding="utf-8")
    return path


def _preprocess(categorical: list[str], numeric: list[str]) -> ColumnTransformer:
    return ColumnTransformer([("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
                              ("numeric", "passthrough", numeric)])


def train_tiers(out: Path) -> Path:
    g = german()
    schema = g.load_schema()
    X, y = g.load_data(schema=schema)
    tier = tier_of(X, y)
    model = RandomForestClassifier(n_estimators=60, max_depth=6, min_samples_leaf=5, random_state=SEED)
    pipe = Pipeline([("preprocess", _preprocess(g.CATEGORICAL, g.NUMERIC)), ("model", model)]).fit(X, tier)
    manifest = {k: copy.deepcopy(v) for k, v in schema.items() if k not in ("policy", "notice", "explanation")}
    manifest |= {"name": TIERS, "version": "1.0.0",
                 "purpose_text": "Consumer-loan applications: a risk tier (low, medium, high) and its outcome (example only)"}
    manifest["policy"] = copy.deepcopy(TIERS_POLICY)
    manifest["notice"] = _notice(
        "Өтінімді үш тәуекел деңгейінің біріне жатқызады (төмен, орташа, жоғары); әр деңгейдің өз шешімі бар.",
        "Относит заявку к одному из трёх уровней риска (низкий, средний, высокий); у каждого уровня своё решение.",
        "Places the application in one of three risk tiers (low, medium, high); each tier has its own outcome.",
        schema)
    manifest["explanation"] = {**schema["explanation"], "output_space": "probability"}
    background = g.background_rows(X, y)
    return _write(out / TIERS, pipe, background, manifest)


def train_amount(out: Path) -> Path:
    g = german()
    schema = g.load_schema()
    X, y = g.load_data(schema=schema)
    numeric = [c for c in g.NUMERIC if c != "credit_amount"]
    features = [c for c in X.columns if c != "credit_amount"]
    model = GradientBoostingRegressor(n_estimators=80, max_depth=3, random_state=SEED)
    pipe = Pipeline([("preprocess", _preprocess(g.CATEGORICAL, numeric)), ("model", model)])
    pipe.fit(X[features], X["credit_amount"].astype(float))
    manifest = {k: copy.deepcopy(v) for k, v in schema.items() if k not in ("policy", "notice", "explanation", "features")}
    manifest |= {"name": AMOUNT, "version": "1.0.0",
                 "purpose_text": "Consumer-loan applications: the loan amount such applications were granted, in bands "
                                 "(example only)"}
    manifest["features"] = [f for f in schema["features"] if f["name"] != "credit_amount"]
    manifest["policy"] = copy.deepcopy(AMOUNT_POLICY)
    manifest["notice"] = _notice(
        "Осындай өтінімдерге берілген несие сомасын (DM) есептейді; сома шағын, стандартты немесе үлкен болып жіктеледі.",
        "Рассчитывает сумму кредита (DM), которую получали подобные заявки; сумма относится к небольшой, "
        "стандартной или крупной.",
        "Computes the loan amount (DM) that applications like this one were granted; the amount is small, "
        "standard or large.",
        schema)
    # Explained by sampling in DM: the target error is relative to the spread of the amounts (see README).
    manifest["explanation"] = {**schema["explanation"], "target_error": 0.05, "max_evals_cap": 2000}
    background = g.background_rows(X, y, n=50)[features]
    return _write(out / AMOUNT, pipe, background, manifest)


def train(out: Path = HERE) -> dict[str, Path]:
    """Train both examples into out/<name>/; return their manifest paths by name."""
    return {TIERS: train_tiers(Path(out)), AMOUNT: train_amount(Path(out))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    for name, path in train(args.out).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
