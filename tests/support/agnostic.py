"""A real model that only the model-agnostic explainer can explain: an MLP on the German-credit example.

The example's own data, schema and background rows (examples/german_credit/train.py), with a neural
network instead of gradient boosting: neither TreeSHAP nor LinearSHAP applies, so its decisions are
explained by the ``explain`` job after they commit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import skops.io
import tomli_w
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from gateway.config import SKOPS_TRUSTED_TYPES

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "german_credit" / "train.py"
# skops reports this type of a fitted MLPClassifier as untrusted; the deployment trusts it by configuration.
MLP_TYPES = ["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"]
TRUSTED_TYPES = [*SKOPS_TRUSTED_TYPES, *MLP_TYPES]
TRUSTED_TYPES_ENV = {"GATEWAY_SKOPS_TRUSTED_TYPES": json.dumps(TRUSTED_TYPES)}


def _train_module() -> Any:
    spec = importlib.util.spec_from_file_location("german_credit_train_mlp", TRAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_mlp(out_dir: Path, *, name: str = "german-credit-mlp", seed: int = 0) -> Path:
    """Train the MLP, write model.skops, background.csv and manifest.toml into out_dir; return the manifest."""
    train = _train_module()
    schema = train.load_schema()
    X, y = train.load_data(schema=schema)
    preprocess = ColumnTransformer([
        ("categorical", OneHotEncoder(handle_unknown="ignore"), train.CATEGORICAL),
        ("numeric", StandardScaler(), train.NUMERIC),
    ])
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=seed)
    with warnings.catch_warnings():  # a few hundred iterations are plenty for a test model; no need to converge
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe = Pipeline([("preprocess", preprocess), ("model", model)]).fit(X, y)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = out_dir / "model.skops"
    skops.io.dump(pipe, artifact, compression=zipfile.ZIP_DEFLATED)
    background = out_dir / "background.csv"
    train.background_rows(X, y).to_csv(background, index=False, lineterminator="\n")
    manifest = train.build_manifest(schema, train.sha256_file(artifact), train.sha256_file(background))
    manifest["name"] = name
    manifest["version"] = f"1.0.{seed}"
    path = out_dir / "manifest.toml"
    path.write_text(tomli_w.dumps(manifest), encoding="utf-8")
    return path


def http_registration(manifest_path: Path) -> tuple[dict[str, Any], bytes, bytes]:
    """The JSON body of POST /v1/models for a manifest file, with its artifact and background bytes."""
    from gateway.manifest import load_manifest

    manifest, folder = load_manifest(manifest_path)
    assert manifest.artifact and manifest.explanation.background
    body = manifest.model_dump(mode="json", exclude_none=True)
    body.pop("artifact", None)
    body["explanation"].pop("background", None)
    return body, (folder / manifest.artifact).read_bytes(), (folder / manifest.explanation.background).read_bytes()


def upload_and_register(client: Any, admin: dict[str, str], manifest_path: Path, *, with_background: bool = True,
                        **changes: Any) -> Any:
    """Upload the files and register (active) over HTTP, the way an operator would; return the response.

    `changes` replace top-level manifest fields (e.g. risk_class) in the registered body.
    """
    body, artifact, background = http_registration(manifest_path)
    body |= changes
    files = [artifact, background] if with_background else [artifact]
    if not with_background:
        body["explanation"].pop("background_sha256", None)
    for data in files:
        sha = hashlib.sha256(data).hexdigest()
        put = client.put(f"/v1/blobs/{sha}", data=data,
                         headers={**admin, "Content-Type": "application/octet-stream"})
        assert put.status_code in (200, 201), put.get_json()
    return client.post("/v1/models", json=body | {"activate": True}, headers=admin)
