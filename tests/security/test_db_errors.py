"""Finding 12: a failed write logged its statement parameters (inputs, references, names). The test makes a
real write fail in the database and scans every log record."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from gateway.extensions import db
from tests.conftest import Gateway

REFERENCE, OPERATOR = "application-PERSONAL-4711", "Officer Zhanar Secretova"


def test_a_failed_write_logs_no_personal_data(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with gateway.app.app_context():  # the database refuses every new decision
        db.session.execute(sa.text("CREATE TRIGGER refuse_decisions BEFORE INSERT ON decisions "
                                   "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"))
        db.session.commit()
    resp = gateway.decide(gateway.sample | {"reference": REFERENCE, "operator": OPERATOR})
    assert resp.status_code == 503, resp.get_json()
    logged = "\n".join([r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records])
    assert "refused by the test" in logged  # the failure itself is logged...
    for personal in (REFERENCE, OPERATOR, "female_divorced_separated_married", "radio_television",
                     gateway.sample["subject"]["iin"]):
        assert personal not in logged, personal  # ...without the statement's parameters
    assert "parameters hidden" in logged or "[parameters" not in logged
