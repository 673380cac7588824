"""Remote models under multi-class and regression policies.

On real servers (MLServer's scikit-learn runtime answering predict_proba / predict, MLflow's scoring server
with a pyfunc answering the same): decisions, the notice's text, and explanations computed by a real
`gateway worker` process - the decided class's probability, or the value in the model's units - in kk/ru/en.
Against a small OIP v2 server that misbehaves on purpose: every malformed answer (shape, NaN, outside
[0, 1], rows not summing to 1, an infinite value) is a 503 naming it, with nothing recorded. And the
manifest's rules for what a remote model answers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from gateway import create_app, registry
from gateway.adapters.remote import SUM_TOLERANCE
from gateway.auth import create_key
from gateway.db import write_transaction
from gateway.extensions import db
from gateway.manifest import Manifest
from gateway.notifications.render import Job, message_for
from tests.conftest import Gateway
from tests.remote.test_remote_servers import worker
from tests.support.gateway_server import UNLIMITED_RATES
from tests.support.remote_kinds import AMOUNT, TIERS, KindModel
from tests.support.remote_models import oip_frame

pytestmark = pytest.mark.gateway_config(MODEL_ALLOW_PRIVATE=True)
LANGS = ("kk", "ru", "en")
TABLES = ("decisions", "explanations", "notifications", "log_leaves", "idempotency_keys")
# Rows of the background that reach different tiers and bands (checked below: at least two of each).
ROWS = range(8)


def sources_for(kind: str, request: pytest.FixtureRequest, models: dict[str, KindModel]) -> dict[str, dict[str, Any]]:
    if kind == "mlserver":
        server = request.getfixturevalue("kinds_mlserver")
        return {name: m.source("oip_v2", server.url, model=name) for name, m in models.items()}
    servers = request.getfixturevalue("kinds_mlflow")
    return {name: m.source("mlflow", servers[name].url) for name, m in models.items()}


def provision(folder: Path, models: dict[str, KindModel], sources: dict[str, dict[str, Any]]) -> tuple[Any, str, dict[str, str]]:
    """An instance folder (SQLite) with both remote models registered and active; (app, agency key, env)."""
    import os
    import secrets

    folder.mkdir(parents=True)
    keys = {name: secrets.token_hex(32) for name in ("SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")}
    (folder / "config.py").write_text("".join(f"{k} = {v!r}\n" for k, v in keys.items()) + "MODEL_ALLOW_PRIVATE = True\n")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'gateway.db'}", **keys, "MODEL_ALLOW_PRIVATE": True,
                      "RATELIMIT_ENABLED": False, "NOTIFY_ROUTES": {"email": "log"}})
    with app.app_context():
        upgrade()
        for name, model in models.items():
            with write_transaction():
                registry.register(Manifest.model_validate(model.manifest(sources[name])), None, model.background_csv,
                                  activate=True, registered_by="tests")
        with write_transaction():
            _, key = create_key(name="remote-agency", role="agency")
    env = {**os.environ, "GATEWAY_INSTANCE_PATH": str(folder), **UNLIMITED_RATES,
           "GATEWAY_NOTIFY_ROUTES": '{"email": "log"}', "GATEWAY_JOBS_EXPLAIN_POLL_INTERVAL_S": "0.05"}
    env.pop("GATEWAY_DATABASE_URL", None)
    return app, key, env


def notice_texts(app: Any, decision_id: str) -> dict[str, str]:
    """The decision notice rendered in each language, as the dispatcher renders it."""
    with app.app_context():
        row = db.session.execute(sa.text("SELECT id, kind, channel, created_at FROM notifications "
                                         "WHERE decision_id = :d AND kind = 'decision_notice' ORDER BY channel"),
                                 {"d": decision_id}).first()
        assert row is not None
        created = row.created_at if isinstance(row.created_at, dt.datetime) else dt.datetime.fromisoformat(row.created_at)
        return {lang: message_for(Job(row.id, decision_id, row.kind, row.channel, lang, 0, created)).text
                for lang in LANGS}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlserver", "mlflow"])
def test_multiclass_and_regression_on_a_real_server_decide_notify_and_are_explained_by_a_worker(
        kind: str, request: pytest.FixtureRequest, kind_models: dict[str, KindModel], tmp_path: Path) -> None:
    app, key, env = provision(tmp_path / "instance", kind_models, sources_for(kind, request, kind_models))
    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}
    decided: dict[str, tuple[str, float, str]] = {}
    for name, model in kind_models.items():
        outcomes = set()
        for n in ROWS:
            body = model.request(n)
            resp = client.post(f"/v1/models/{name}/decisions", json=body, headers={**auth, "Idempotency-Key": f"{name}{n}"})
            assert resp.status_code == 201, resp.get_json()
            score, outcome = model.expected(body["features"])
            got = resp.get_json()
            assert got["outcome"] == outcome and got["score"] == pytest.approx(score, rel=1e-12, abs=1e-12)
            outcomes.add(outcome)
            decided[got["decision_id"]] = (name, score, outcome)
        assert len(outcomes) >= 2, (name, outcomes)
    for did in decided:  # model-agnostic: the explain job computes them after the decision commits
        assert client.get(f"/v1/decisions/{did}/explanation", headers=auth).status_code == 202
    log = tmp_path / "worker.log"
    with worker(env, log) as process:
        deadline = time.monotonic() + 240
        while True:
            with app.app_context():
                rows = db.session.execute(sa.text("SELECT decision_id, status, additivity_error, method, output, "
                                                  "output_space FROM explanations")).mappings().all()
                db.session.commit()
            if len(rows) == len(decided) and all(r["status"] == "ready" for r in rows):
                break
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"not explained within 240 s: {log.read_text()[-3000:]}"
            time.sleep(0.2)
    for r in rows:
        name, score, _ = decided[r["decision_id"]]
        assert r["method"] == "permutation_shap_estimate"
        assert r["output_space"] == ("value" if name == AMOUNT else "probability")
        assert r["output"] == pytest.approx(score, rel=1e-12, abs=1e-12)  # the decided class's probability / value
        assert r["additivity_error"] <= 1e-9 * max(1.0, abs(score))
    for did, (name, score, outcome) in decided.items():
        policy = kind_models[name].policy
        label = policy["outcome_labels"][outcome]
        texts = {lang: client.get(f"/v1/decisions/{did}/explanation?lang={lang}", headers=auth).get_json()
                 for lang in LANGS}
        notices = notice_texts(app, did)
        for lang in LANGS:
            assert label[lang] in notices[lang], (lang, notices[lang])
        if name == TIERS:
            assert f"the probability of this outcome «{label['en']}»" in texts["en"]["text"]["summary"]
            assert f"вероятность этого исхода «{label['ru']}»" in texts["ru"]["text"]["summary"]
            assert f"осы «{label['kk']}» нәтижесінің ықтималдығын" in texts["kk"]["text"]["summary"]
        else:
            assert f"The system computed the amount {score:,.0f} DM" in texts["en"]["text"]["summary"]
            assert all(("raised the amount by about" in s or "lowered the amount by about" in s) and " DM" in s
                       for s in texts["en"]["text"]["factors"]), texts["en"]["text"]["factors"]
            assert all(("увеличило сумму на" in s or "уменьшило сумму на" in s) and "DM" in s
                       for s in texts["ru"]["text"]["factors"])
            assert all("соманы" in s and "DM" in s for s in texts["kk"]["text"]["factors"])
            said = {"kk": "Жүйе есептеген сома", "ru": "Сумма, рассчитанная системой", "en": "Amount computed by the system"}
            for lang in LANGS:
                assert said[lang] in notices[lang], (lang, notices[lang])
    with app.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()


# --- a server that misbehaves on purpose ----------------------------------------------------------------

class KindsOip:
    """An OIP v2 server (pytest-httpserver) answering with a real multi-class or regression model, or wrongly."""

    def __init__(self, httpserver: Any, model: KindModel) -> None:
        from werkzeug.wrappers import Response

        self.server, self.model, self.mode, self._response = httpserver, model, "ok", Response
        self.output = "predict_proba" if model.method == "predict_proba" else "predict"
        httpserver.expect_request("/v2/health/ready").respond_with_data("")
        httpserver.expect_request(f"/v2/models/{model.name}", method="GET").respond_with_json(
            {"name": model.name, "versions": ["v1"], "platform": "sklearn", "inputs": [], "outputs": []})
        httpserver.expect_request(f"/v2/models/{model.name}/infer", method="POST").respond_with_handler(self._infer)

    def source(self, **extra: Any) -> dict[str, Any]:
        return self.model.source("oip_v2", self.server.url_for("/").rstrip("/"), model=self.model.name, **extra)

    def _infer(self, request: Any) -> Any:
        body = json.loads(request.get_data())
        assert [o["name"] for o in body["outputs"]] == [self.output]
        answer = self.model.answer(oip_frame(body))
        mode = self.mode
        if mode == "nan":
            answer[0] = np.nan
        elif mode == "out_of_range":
            answer[0] = [-0.25, 1.0, 0.25]
        elif mode == "sum":  # scores, not a distribution: each in [0, 1], the row sums to 1.5
            answer[0] = [0.5, 0.5, 0.5]
        elif mode == "sum_within_tolerance":
            answer[0] = [0.5, 0.5 - SUM_TOLERANCE / 2, 0.0]
        elif mode == "inf":
            answer[0] = np.inf
        elif mode == "wrong_shape":
            answer = answer[:, :2] if answer.ndim == 2 else np.stack([answer, answer], axis=1)
        return self._response(json.dumps({"model_name": self.model.name, "model_version": "v1", "outputs": [
            {"name": self.output, "datatype": "FP64", "shape": list(answer.shape), "data": answer.ravel().tolist()}]}),
            content_type="application/json")


def register_http(gw: Gateway, model: KindModel, source: dict[str, Any]) -> Any:
    sha = hashlib.sha256(model.background_csv).hexdigest()
    put = gw.client.put(f"/v1/blobs/{sha}", data=model.background_csv,
                        headers={**gw.auth("admin"), "Content-Type": "application/octet-stream"})
    assert put.status_code in (200, 201), put.get_json()
    return gw.client.post("/v1/models", json=model.manifest(source) | {"activate": True}, headers=gw.auth("admin"))


def counts(gw: Gateway) -> dict[str, int]:
    return {t: gw.count(t) for t in TABLES}


@pytest.mark.parametrize(("name", "mode", "code"), [
    (TIERS, "nan", "model_answer_nan"), (TIERS, "out_of_range", "model_answer_out_of_range"),
    (TIERS, "sum", "model_answer_sum"), (TIERS, "wrong_shape", "model_answer_shape"),
    (AMOUNT, "nan", "model_answer_nan"), (AMOUNT, "inf", "model_answer_infinite"),
    (AMOUNT, "wrong_shape", "model_answer_shape"),
])
def test_a_malformed_multiclass_or_regression_answer_is_a_503_saying_which(
        gateway: Gateway, httpserver: Any, kind_models: dict[str, KindModel], name: str, mode: str, code: str) -> None:
    model = kind_models[name]
    remote = KindsOip(httpserver, model)
    reg = register_http(gateway, model, remote.source())
    assert reg.status_code == 201, reg.get_json()
    body = model.request(2)
    ok = gateway.decide(body, model=name)
    assert ok.status_code == 201, ok.get_json()
    assert ok.get_json()["score"] == pytest.approx(model.expected(body["features"])[0], rel=1e-12, abs=1e-12)
    before = counts(gateway)
    remote.mode = mode
    resp = gateway.decide(model.request(3), model=name)
    assert resp.status_code == 503, resp.get_json()
    assert resp.get_json()["error"]["code"] == code, resp.get_json()
    assert counts(gateway) == before  # nothing recorded


def test_class_probabilities_may_miss_1_by_the_stated_tolerance_only(
        gateway: Gateway, httpserver: Any, kind_models: dict[str, KindModel]) -> None:
    model = kind_models[TIERS]
    remote = KindsOip(httpserver, model)
    assert register_http(gateway, model, remote.source()).status_code == 201
    remote.mode = "sum_within_tolerance"
    resp = gateway.decide(model.request(3), model=TIERS)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["score"] == 0.5  # the first of two equal probabilities decides (the model's order)


def test_the_manifest_says_what_a_remote_model_answers(kind_models: dict[str, KindModel]) -> None:
    tiers, amount = kind_models[TIERS], kind_models[AMOUNT]
    url = "https://models.example.kz"
    base = tiers.manifest(tiers.source("oip_v2", url, model="tiers"))
    assert Manifest.model_validate(base).source.classes == tiers.classes  # type: ignore[union-attr]
    for source, message in [
        ({"classes": None}, "source.classes is required under a multi-class policy"),
        ({"classes": ["low", "medium", "severe"]}, r"source.classes \['low', 'medium', 'severe'\] are not policy.classes"),
        ({"classes": ["low", "low", "high"]}, "a class is listed twice"),
        ({"positive_index": 1}, "source.positive_index is for binary policies"),
    ]:
        with pytest.raises(pydantic.ValidationError, match=message):
            Manifest.model_validate(base | {"source": base["source"] | source})
    regression = amount.manifest(amount.source("mlflow", url))
    assert Manifest.model_validate(regression).source.output == "predict"  # type: ignore[union-attr]
    explicit = regression | {"source": regression["source"] | {"protocol": "oip_v2", "model": "m", "output": "value"}}
    assert Manifest.model_validate(explicit | {"adapter": "oip_v2"}).source.output == "value"  # type: ignore[union-attr]
    with pytest.raises(pydantic.ValidationError, match="source.positive_index is for binary policies"):
        Manifest.model_validate(regression | {"source": regression["source"] | {"positive_index": 0}})
    with pytest.raises(pydantic.ValidationError, match="source.classes is for multi-class policies"):
        Manifest.model_validate(regression | {"source": regression["source"] | {"classes": ["a", "b", "c"]}})
