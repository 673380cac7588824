"""Remote models against a small OIP v2 server that answers with a real model or misbehaves on purpose.

Every failure is a 503 whose code says which, with nothing recorded; the circuit breaker opens after
consecutive failures, answers at once while open (no call reaches the server), shows on /readyz and
closes again after its cool-down; a server that reports another version is refused; model URLs follow
the webhook address rules.
"""

from __future__ import annotations

import hashlib
import socket
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import Gateway
from tests.support.remote_models import FEATURES, NAME, MisbehavingOip, SmallModel

pytestmark = pytest.mark.gateway_config(MODEL_ALLOW_PRIVATE=True)
TABLES = ("decisions", "explanations", "notifications", "log_leaves", "idempotency_keys")


@pytest.fixture
def remote(httpserver: Any, small_model: SmallModel) -> MisbehavingOip:
    return MisbehavingOip(httpserver, small_model)


def register(gw: Gateway, model: SmallModel, source: dict[str, Any], **extra: Any) -> Any:
    sha = hashlib.sha256(model.background_csv).hexdigest()
    put = gw.client.put(f"/v1/blobs/{sha}", data=model.background_csv,
                        headers={**gw.auth("admin"), "Content-Type": "application/octet-stream"})
    assert put.status_code in (200, 201), put.get_json()
    return gw.client.post("/v1/models", json=model.manifest(source, **extra) | {"activate": True},
                          headers=gw.auth("admin"))


def counts(gw: Gateway) -> dict[str, int]:
    return {t: gw.count(t) for t in TABLES}


def test_decisions_score_with_the_remote_model_and_pin_its_version(gateway: Gateway, remote: MisbehavingOip,
                                                                   small_model: SmallModel) -> None:
    reg = register(gateway, small_model, remote.source())
    assert reg.status_code == 201, reg.get_json()
    body = small_model.request(3)
    resp = gateway.decide(body, model=NAME)
    assert resp.status_code == 201, resp.get_json()
    expected = small_model.proba(pd.DataFrame([body["features"]]))[0, small_model.positive_index]
    assert resp.get_json()["score"] == pytest.approx(expected, abs=1e-12)
    # The decision names the pinned description of the remote model (name, version, platform).
    with gateway.app.app_context():
        from gateway import runtime
        from gateway.decisions import serving_model

        loaded = serving_model(NAME)
        assert loaded.adapter.describe()["version"] == "v1"
        assert loaded.adapter.describe()["platform"] == "sklearn"
        assert resp.get_json()["model"]["sha256"] == loaded.sha256
        assert runtime.health(loaded) == {"circuit": {"state": "closed", "consecutive_failures": 0}}
    assert gateway.client.get(f"/v1/decisions/{resp.get_json()['decision_id']}/explanation",
                              headers=gateway.auth("agency_a")).status_code == 202  # the explain job's


@pytest.mark.parametrize(("mode", "code"), [
    ("timeout", "model_timeout"), ("5xx", "model_server_error"), ("nan", "model_answer_nan"),
    ("out_of_range", "model_answer_out_of_range"), ("wrong_shape", "model_answer_shape"),
    ("not_json", "model_answer_shape"), ("redirect", "model_request_rejected"), ("gone", "model_changed"),
])
def test_a_failing_remote_is_a_503_saying_which_and_nothing_is_recorded(
        gateway: Gateway, remote: MisbehavingOip, small_model: SmallModel, mode: str, code: str) -> None:
    # The default read timeout (2 s): registration's own calls keep their slack on a loaded machine.
    assert register(gateway, small_model, remote.source()).status_code == 201
    before = counts(gateway)
    remote.mode = mode
    resp = gateway.decide(small_model.request(1), model=NAME)
    assert resp.status_code == 503, resp.get_json()
    assert resp.get_json()["error"]["code"] == code
    assert counts(gateway) == before
    remote.mode = "ok"
    remote.release.set()  # the test server answers one request at a time: let the slow answer finish
    resp = gateway.decide(small_model.request(1), model=NAME)
    assert resp.status_code == 201, resp.get_json()


def test_the_breaker_opens_answers_at_once_shows_on_readyz_and_recovers(
        gateway: Gateway, remote: MisbehavingOip, small_model: SmallModel) -> None:
    source = remote.source(breaker_failures=3, breaker_cooldown_s=3.0, url=remote.url + "/")  # its own breaker
    assert register(gateway, small_model, source).status_code == 201
    assert gateway.decide(small_model.request(0), model=NAME).status_code == 201
    before = counts(gateway)
    remote.mode = "5xx"
    codes = [gateway.decide(small_model.request(i), model=NAME).get_json()["error"]["code"] for i in range(3)]
    assert codes == ["model_server_error"] * 3
    calls = remote.infer_calls
    refused = gateway.decide(small_model.request(4), model=NAME)
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "model_circuit_open"
    assert 2 <= int(refused.headers["Retry-After"]) <= 3  # a 3 s cool-down: slack for a loaded machine
    assert remote.infer_calls == calls  # answered at once: nothing reached the server
    ready = gateway.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["models"][f"{NAME} 1"].startswith("circuit open: 3 consecutive failures")
    assert counts(gateway) == before

    time.sleep(3.05)  # the cool-down passes; one trial call goes through, fails, and opens it again
    assert gateway.decide(small_model.request(5), model=NAME).get_json()["error"]["code"] == "model_server_error"
    assert gateway.decide(small_model.request(5), model=NAME).get_json()["error"]["code"] == "model_circuit_open"
    remote.mode = "ok"
    time.sleep(3.05)
    assert gateway.decide(small_model.request(6), model=NAME).status_code == 201
    assert gateway.client.get("/readyz").status_code == 200
    assert counts(gateway)["decisions"] == before["decisions"] + 1


def test_another_version_on_the_server_is_refused_until_it_is_registered(
        gateway: Gateway, remote: MisbehavingOip, small_model: SmallModel) -> None:
    assert register(gateway, small_model, remote.source()).status_code == 201
    before = counts(gateway)
    remote.mode, remote.version = "changed", "v2"
    for _ in range(6):  # not a failure of the server: the breaker stays closed, every answer says why
        resp = gateway.decide(small_model.request(2), model=NAME)
        assert resp.status_code == 503
        assert resp.get_json()["error"]["code"] == "model_changed"
    assert resp.get_json()["error"]["details"] == {"registered": {"name": "credit", "version": "v1"},
                                                   "serving": {"name": "credit", "version": "v2"}}
    assert counts(gateway) == before
    # Re-registering the same version with another pinned model is refused; a new version is accepted.
    assert register(gateway, small_model, remote.source()).status_code == 409
    remote.mode = "ok"
    reg = register(gateway, small_model, remote.source(), version="2")
    assert reg.status_code == 201, reg.get_json()
    last = gateway.decide(small_model.request(2), model=NAME)
    assert last.status_code == 201, last.get_json()


def test_explanation_batches_go_in_chunks_of_max_batch_rows(gateway: Gateway, remote: MisbehavingOip,
                                                            small_model: SmallModel) -> None:
    assert register(gateway, small_model, remote.source(max_batch_rows=7)).status_code == 201
    with gateway.app.app_context():
        from gateway.decisions import serving_model

        adapter = serving_model(NAME).adapter
        frame = pd.concat([small_model.background] * 2, ignore_index=True)
        calls = remote.infer_calls
        got = adapter.score(frame)
    assert remote.infer_calls - calls == -(-len(frame) // 7)
    assert np.allclose(got, small_model.proba(frame)[:, small_model.positive_index], atol=1e-12)


# --- the address rules -------------------------------------------------------------------------------

@pytest.mark.gateway_config(MODEL_ALLOW_PRIVATE=False)
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "https://127.0.0.1:9/", "https://localhost:9/",
                                 "https://10.1.2.3/", "https://[::ffff:192.168.0.1]/", "https://169.254.169.254/",
                                 "https://user:pw@models.example.kz/"])
def test_model_urls_follow_the_webhook_address_rules(gateway: Gateway, small_model: SmallModel, url: str) -> None:
    resp = register(gateway, small_model, {"protocol": "oip_v2", "url": url, "model": "credit",
                                           "positive_index": small_model.positive_index})
    assert resp.status_code == 503, resp.get_json()
    assert resp.get_json()["error"]["code"] == "model_address_refused"
    assert "model URL" in resp.get_json()["error"]["message"]


@pytest.mark.gateway_config(MODEL_ALLOW_PRIVATE=False)
def test_a_host_name_that_resolves_to_a_private_address_is_refused_at_connect_time(
        gateway: Gateway, small_model: SmallModel) -> None:
    host = socket.gethostname()
    try:
        addresses = {i[4][0] for i in socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)}
    except socket.gaierror:
        pytest.skip(f"this machine's host name {host!r} does not resolve")
    from gateway.addresses import is_public

    if any(is_public(a) for a in addresses):
        pytest.skip(f"{host!r} resolves to a public address here")
    resp = register(gateway, small_model, {"protocol": "oip_v2", "url": f"https://{host}:9/", "model": "credit",
                                           "positive_index": small_model.positive_index})
    assert resp.status_code == 503, resp.get_json()
    assert resp.get_json()["error"]["code"] == "model_address_refused"


def test_the_manifest_keeps_credentials_and_artifacts_out_of_remote_sources(small_model: SmallModel) -> None:
    from pydantic import ValidationError

    from gateway.manifest import Manifest

    source = {"protocol": "oip_v2", "url": "https://models.example.kz", "model": "credit"}
    Manifest.model_validate(small_model.manifest(source))
    with pytest.raises(ValidationError, match="no artifact or sha256"):
        Manifest.model_validate(small_model.manifest(source) | {"sha256": "0" * 64})
    with pytest.raises(ValidationError, match="needs 'model'"):
        Manifest.model_validate(small_model.manifest({"protocol": "oip_v2", "url": "https://m.example.kz"}))
    with pytest.raises(ValidationError, match="extra"):
        Manifest.model_validate(small_model.manifest(source | {"token": "secret"}))
    with pytest.raises(ValidationError, match="source's protocol"):
        Manifest.model_validate(small_model.manifest(source) | {"adapter": "mlflow"})
    assert sorted(FEATURES) == sorted(f["name"] for f in small_model.manifest(source)["features"])


def test_the_explain_job_explains_a_remote_decision_in_a_few_batched_calls(
        gateway: Gateway, remote: MisbehavingOip, small_model: SmallModel) -> None:
    from explainers import PermutationExplainer
    from gateway.jobs.explain import ExplainKind

    assert register(gateway, small_model, remote.source()).status_code == 201
    body = small_model.request(7)
    resp = gateway.decide(body, model=NAME)
    assert resp.status_code == 201, resp.get_json()
    did = resp.get_json()["decision_id"]
    assert gateway.client.get(f"/v1/decisions/{did}/explanation", headers=gateway.auth("agency_a")).status_code == 202
    calls, rows = remote.infer_calls, remote.rows_scored
    assert ExplainKind(gateway.app).run_once() == 1
    # One call for the row's own output, then one per sampling round (64, 128, then the budget's 249 pairs):
    # every coalition of a round over every background row goes in the same request.
    assert remote.infer_calls - calls <= 4
    assert remote.rows_scored - rows <= 1 + 249 * 2 * (len(FEATURES) - 1) * len(small_model.background)
    got = gateway.client.get(f"/v1/decisions/{did}/explanation?lang=en", headers=gateway.auth("agency_a"))
    assert got.status_code == 200, got.get_json()
    with gateway.app.app_context():
        import sqlalchemy as sa

        from gateway.extensions import db

        stored = db.session.execute(sa.text("SELECT * FROM explanations WHERE decision_id = :d"),
                                    {"d": did}).mappings().one()
    assert stored["method"] == "permutation_shap_estimate"
    assert stored["additivity_error"] <= 1e-12  # every permutation telescopes: additive whatever the budget
    # The same explainer, seed and background on the pipeline in process give the same numbers: the remote
    # path changes where the model runs, not what is computed.
    local = PermutationExplainer(lambda frame: small_model.proba(frame)[:, small_model.positive_index],
                                 random_state=0, max_evals_cap=2000)
    order = [f["name"] for f in small_model.manifest(remote.source())["features"]]  # the players' order
    local.fit(small_model.background[order])
    expected = local.explain(pd.DataFrame([body["features"]])[order])[0]
    attributions = stored["attributions"]
    if isinstance(attributions, str):
        import json

        attributions = json.loads(attributions)
    assert (stored["base_value"], stored["output"]) == pytest.approx((expected.base_value, expected.output), abs=1e-12)
    for name in FEATURES:
        assert attributions[name] == pytest.approx(expected.attributions[name], abs=1e-12)
    assert stored["base_value"] == pytest.approx(expected.base_value, abs=1e-12)


def test_an_explanation_whose_remote_fails_is_retried_and_stored_when_it_answers_again(
        gateway: Gateway, remote: MisbehavingOip, small_model: SmallModel) -> None:
    import datetime as dt

    import sqlalchemy as sa

    from gateway.extensions import db
    from gateway.jobs.explain import ExplainKind

    assert register(gateway, small_model, remote.source()).status_code == 201
    resp = gateway.decide(small_model.request(9), model=NAME)
    assert resp.status_code == 201
    did = resp.get_json()["decision_id"]
    remote.mode = "5xx"
    assert ExplainKind(gateway.app).run_once() == 1

    def row() -> Any:
        with gateway.app.app_context():
            found = db.session.execute(sa.text("SELECT status, attempts, last_error FROM explanations "
                                               "WHERE decision_id = :d"), {"d": did}).mappings().one()
            db.session.commit()
            return found

    failed = row()
    assert (failed["status"], failed["attempts"]) == ("pending", 1)
    assert "model_server_error" in failed["last_error"]
    remote.mode = "ok"
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)  # past the retry delay
    assert ExplainKind(gateway.app).run_once(now=later) == 1
    assert row()["status"] == "ready"
