"""Monitor-only values: collected with the decision, stored encrypted, never given to the model, the person,
the agency or the audit log."""

from __future__ import annotations

import copy

import sqlalchemy as sa

from gateway import keystore
from gateway.contacts import decrypt_monitoring
from gateway.extensions import db
from tests.conftest import Gateway
from tests.support.citizens import notice_token


def test_sex_is_stored_encrypted_and_shown_to_nobody(gateway: Gateway) -> None:
    body = copy.deepcopy(gateway.sample)
    assert body["monitoring"] == {"sex": "female"}
    created = gateway.decide(body)
    assert created.status_code == 201, created.get_json()
    did = created.get_json()["decision_id"]
    with gateway.app.app_context():
        [ciphertext] = db.session.execute(sa.text(
            "SELECT ciphertext FROM monitoring_values WHERE decision_id = :d"), {"d": did}).scalars().all()
        wrapped = keystore.wrapped(did)  # the data key: in the key store, a database of its own
        assert b"female" not in bytes(ciphertext) and b"sex" not in bytes(ciphertext)
        key = gateway.app.extensions["gateway.settings"].contact_key
        # Under the decision's own data key: destroying it (the retention purge) shreds these values too.
        assert decrypt_monitoring(key, did, bytes(ciphertext), bytes(wrapped)) == {"sex": "female"}
        assert decrypt_monitoring(key, did, bytes(ciphertext), None) == {}
        inputs = db.session.execute(sa.text("SELECT inputs FROM decisions WHERE id = :d"), {"d": did}).scalar_one()
        leaves = db.session.execute(sa.text("SELECT record FROM log_leaves")).scalars().all()
    assert "sex" not in str(inputs) and all("female" not in leaf and '"sex"' not in leaf for leaf in leaves)
    for headers in (gateway.auth("agency_a"), {"Authorization": f"Bearer {notice_token(gateway, did)}"}):
        view = gateway.client.get(f"/v1/decisions/{did}", headers=headers)
        assert view.status_code == 200 and "female" not in view.get_data(as_text=True)
        explained = gateway.client.get(f"/v1/decisions/{did}/explanation?lang=en", headers=headers)
        assert explained.status_code == 200 and "female" not in explained.get_data(as_text=True).lower()


def test_monitoring_values_are_checked_and_optional(gateway: Gateway) -> None:
    body = copy.deepcopy(gateway.sample)
    body["monitoring"] = {"sex": "other", "religion": "x"}
    refused = gateway.decide(body)
    assert refused.status_code == 422
    assert {(d["field"], d["rule"]) for d in refused.get_json()["error"]["details"]} == {
        ("monitoring.sex", "category"), ("monitoring.religion", "unknown")}
    body["monitoring"] = {}
    assert gateway.decide(body).status_code == 201  # the person may not have said; the group is "(not given)"
    # A protected attribute sent as a model input is refused: it is no input of this model.
    body["features"] = {**gateway.sample["features"], "sex": "female"}
    wrong = gateway.decide(body)
    assert wrong.status_code == 422 and wrong.get_json()["error"]["details"][0]["field"] == "features.sex"
