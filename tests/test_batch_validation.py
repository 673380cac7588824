"""A batch row is validated by the single decision's rules: the same rows refused, with the same errors.

Intake checks the usual row (a plain email address, an IIN) without pydantic and with each email domain
checked once per batch; anything else goes through the single decision's `Subject` model. These tests hold
the two to the same outcome: the email addresses one by one against email_validator, and whole rows against
the single-decision endpoint.
"""

from __future__ import annotations

import copy
import gc
import threading
from typing import Any

import pytest
from email_validator import EmailNotValidError, validate_email

from gateway.batches import _plain_email, collector_paused
from tests.conftest import Gateway
from tests.support.gateway_server import valid_iin

URL = "/v1/models/german-credit/decision-batches"

ADDRESSES = [
    "p1@example.kz", "Anna.Smith+tax@Example.KZ", "a-b_c.d@mail.co.uk", "x@sub.domain-with-dash.kz",
    "POSTMASTER@example.kz", "Abuse@EXAMPLE.kz", "a@localhost", "a@b.test", "a@example.invalid", "a@123.456",
    "a@-bad.kz", "a@bad-.kz", "a@a..kz", "a@.kz", "a@kz", "a.@example.kz", ".a@example.kz", "a..b@example.kz",
    "a@xn--80ak6aa92e.com", "a@пример.kz", "ämil@example.kz", "a b@example.kz", '"quoted"@example.kz',
    "a@[127.0.0.1]", "@example.kz", "a@", "no-at-sign", "a@b@example.kz", "Name <a@example.kz>",
    "a" * 64 + "@example.kz", "a" * 65 + "@example.kz", "a@" + "b" * 63 + ".kz", "a@" + "b" * 64 + ".kz",
    "a" * 200 + "@" + "b" * 50 + ".kz", "a" * 240 + "@example.kz", "a@example.kz.", "a@EXAMPLE.KZ",
    "a+b-c.d_e@x.y.z.kz", "a@1example.kz", "a@example.c", "a@example.123", "a@e_x.kz",
]


def _reference(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


@pytest.mark.parametrize("address", ADDRESSES)
def test_a_plain_address_is_normalised_as_email_validator_does(address: str) -> None:
    domains: dict[str, tuple[str, str] | None] = {}
    for _ in range(2):  # the second time from the batch's record of the domain
        fast = _plain_email(address, domains)
        if fast is not None:  # taken by the fast path: exactly the full check's answer
            assert fast == _reference(address)


def test_the_usual_addresses_take_the_fast_path() -> None:
    domains: dict[str, tuple[str, str] | None] = {}
    plain = [a for a in ADDRESSES if _plain_email(a, domains) is not None]
    assert {"p1@example.kz", "Anna.Smith+tax@Example.KZ", "a-b_c.d@mail.co.uk", "a@EXAMPLE.KZ"} <= set(plain)
    assert "POSTMASTER@example.kz" not in plain and "a@localhost" not in plain  # the full check for these
    assert set(domains) >= {"example.kz", "Example.KZ", "mail.co.uk"}


def _row(gw: Gateway, i: int, **subject: Any) -> dict[str, Any]:
    base = {"iin": valid_iin(i), "language": "ru", "contact": {"email": f"p{i}@example.kz"}}
    return {"idempotency_key": f"v-{i}", "features": copy.deepcopy(gw.sample["features"]),
            "subject": base | subject}


def test_rows_mixed_with_invalid_ones_get_the_single_decisions_errors(gateway: Gateway) -> None:
    gw = gateway
    bodies = [
        _row(gw, 0),
        _row(gw, 1, iin="921029350850"),  # wrong check digit
        _row(gw, 2, contact={"email": "a@localhost"}),  # a special-use domain
        _row(gw, 3, contact={"email": "a..b@example.kz"}),
        _row(gw, 4, contact={"email": "POSTMASTER@Example.KZ"}),  # valid, normalised by the full check
        _row(gw, 5, contact={}),  # no channel
        _row(gw, 6, contact={"webhook": "http://127.0.0.1/hook"}),  # refused: loopback, not https
        _row(gw, 7, contact={"email": "Anna.Smith@EXAMPLE.KZ"}),  # valid, the fast path
        _row(gw, 8, iin="991332300012", contact={"email": "x@example.kz"}),  # not a date
        _row(gw, 9, contact={"email": "a@" + "b" * 64 + ".kz"}),  # a label too long
        _row(gw, 10),
    ]
    bodies[10]["features"]["age"] = 7  # under the minimum, with a valid subject
    resp = gw.client.post(URL, headers=gw.auth("agency_a"), json={"rows": bodies})
    assert resp.status_code == 202, resp.get_json()
    batch_id = resp.get_json()["batch_id"]
    view = gw.client.get(f"{URL}/{batch_id}", headers=gw.auth("agency_a")).get_json()
    by_index = {r["index"]: r for r in view["rows"]}
    refused = 0
    for i, body in enumerate(bodies):
        single = gw.decide({k: v for k, v in body.items() if k != "idempotency_key"}, key=f"single-{i}")
        if single.status_code == 201:
            assert by_index[i]["status"] == "pending", (i, by_index[i])
            continue
        refused += 1
        assert single.status_code == 422, (i, single.get_json())
        assert by_index[i]["status"] == "invalid", (i, by_index[i])
        assert by_index[i]["errors"] == single.get_json()["error"]["details"], i
    assert refused == 8 and view["invalid_rows"] == 8
    assert [i for i, r in sorted(by_index.items()) if r["status"] == "pending"] == [0, 4, 7]


def test_the_collector_is_paused_while_a_chunk_runs_and_resumed_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested (a chunk inside an intake's thread, or two runner threads)
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()

    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    with collector_paused():
        pass
    assert not gc.isenabled()  # the other thread's pause outlives ours
    release.set()
    thread.join(10)
    assert gc.isenabled()

    gc.disable()  # paused by someone else: left to them
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failing_chunk_resumes_the_collector() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the model failed")
    assert gc.isenabled()
