"""Intake's shortcuts give exactly what the single decision's checks give.

A batch validates features with `FeatureValidator` (compiled once per batch), hashes a body built from the
validated row without pydantic's serialiser, and derives subject references with OpenSSL's one-shot HMAC.
These tests hold each to the function it stands in for: the same values or the same errors, value by value.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import decisions
from gateway.audit import canonical_json
from gateway.batches import _body
from gateway.contacts import (
    cipher,
    commitment,
    decrypt_contact,
    decrypt_monitoring,
    encrypt_contact,
    encrypt_monitoring,
    new_data_key,
    open_contact,
    open_monitoring,
    unwrap_data_key,
)
from gateway.errors import ValidationFailed
from gateway.features import FeatureValidator, validate_features
from gateway.identity import subject_ref
from gateway.manifest import Manifest
from gateway.schemas.batches import BatchRow
from tests.support.gateway_server import valid_iin

LABELS = {"kk": "Жасы", "ru": "Возраст", "en": "Age"}
TEXT = {"kk": "Мәтін", "ru": "Текст", "en": "Text"}

FEATURES = [
    {"name": "age", "type": "number", "labels": LABELS, "min": 18, "max": 100, "integer": True},
    {"name": "amount", "type": "number", "labels": LABELS},
    {"name": "ratio", "type": "number", "labels": LABELS, "min": 0, "max": 1},
    {"name": "count", "type": "number", "labels": LABELS, "integer": True},
    {"name": "colour", "type": "category", "labels": LABELS, "categories": ["red", "blue"]},
    {"name": "owner", "type": "boolean", "labels": LABELS},
]
VALID = {"age": 30, "amount": 1234.5, "ratio": 0.25, "count": 3, "colour": "red", "owner": True}


class Str(str):
    pass


# Values of every kind for every feature: valid ones, the wrong type, out of range, not whole, not finite,
# integers beyond a double's exact range and beyond its range, subclasses (numpy, str).
CANDIDATES: list[Any] = [
    0, 1, 17, 18, 100, 101, -1, 30.0, 30.5, 18.0, 100.0, 100.0000001, 17.999, 0.0, -0.0, 1.0, 0.5, 1.5,
    True, False, None, "30", "red", "blue", "green", "", Str("red"), [], {}, 1234.5, -1e308, 1e308,
    math.inf, -math.inf, math.nan, 2**53, 2**53 + 1, -(2**53) - 1, 2**63, 10**400, -(10**400),
    np.float64(30.0), np.float64(0.5), np.int64(30), np.bool_(True), 1e-320,
]


def _manifest() -> Manifest:
    return Manifest.model_validate({
        "name": "demo", "version": "1", "adapter": "skops", "sha256": "0" * 64, "features": FEATURES,
        "policy": {"positive_class": "good", "threshold": 0.5, "outcome_above": "approved",
                   "outcome_below": "declined", "adverse_outcome": "declined"},
        "notice": {k: TEXT for k in ("purpose", "functions", "limitations", "owner", "legal_basis")} | {"contact": "a@b.kz"},
        "risk_class": "minimal",
    })


def _outcome(check: Any, values: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", check(values)
    except ValidationFailed as exc:
        return "errors", (str(exc), exc.details)


def _same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    # Equal values, and equal types too (30 stays an int, 30.0 a float: the hash of the body sees the difference).
    if a[0] != b[0]:
        return False
    if a[0] == "errors":
        return bool(a == b)
    x, y = a[1], b[1]
    return list(x) == list(y) and all(type(x[k]) is type(y[k]) and (x[k] == y[k] or x[k] != x[k]) for k in x)


@pytest.mark.parametrize("feature", [f["name"] for f in FEATURES])
def test_each_value_of_each_feature_is_judged_as_validate_features_judges_it(feature: str) -> None:
    manifest = _manifest()
    compiled = FeatureValidator(manifest)
    accepted = 0
    for value in CANDIDATES:
        values = VALID | {feature: value}
        expected = _outcome(lambda v: validate_features(manifest, v), values)
        got = _outcome(compiled, values)
        assert _same(got, expected), (feature, value, got, expected)
        accepted += expected[0] == "ok"
    assert accepted >= 2  # the candidates hold valid values for every feature (True, False), not only invalid ones


def test_missing_unknown_and_several_wrong_values_get_the_same_errors() -> None:
    manifest = _manifest()
    compiled = FeatureValidator(manifest)
    rows: list[dict[str, Any]] = [
        {}, dict(VALID), {k: v for k, v in VALID.items() if k != "age"},
        {k: v for k, v in VALID.items() if k != "owner"} | {"extra": 1},  # as many keys as features, one unknown
        VALID | {"extra": 1}, VALID | {"age": 5, "colour": "green", "owner": "yes"},
        {"age": True, "amount": math.nan, "ratio": 2, "count": 1.5, "colour": 1, "owner": 0},
        dict(reversed(list(VALID.items()))),  # another order: schema order comes back
    ]
    for a, b in itertools.combinations(["age", "ratio", "colour"], 2):
        rows.append(VALID | {a: None, b: "x"})
    for values in rows:
        expected = _outcome(lambda v: validate_features(manifest, v), values)
        assert _same(_outcome(compiled, values), expected), values


def test_valid_rows_come_back_in_schema_order_as_given() -> None:
    compiled = FeatureValidator(_manifest())
    row = compiled(dict(reversed(list(VALID.items()))))
    assert list(row) == [f["name"] for f in FEATURES] and row == VALID


def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"idempotency_key": "k-1",
                           "subject": {"iin": valid_iin(1), "language": "kk", "contact": {"email": "p1@example.kz"}},
                           "features": dict(VALID)}
    row.update(overrides)
    return row


@pytest.mark.parametrize("raw", [
    _row(),
    _row(reference="application-1"),
    _row(operator="Officer A", operator_id="cli_abc", reference="r"),
    _row(monitoring={}),
    _row(monitoring={"sex": "f", "age_band": 3}),
    _row(operator=None, reference=None, operator_id=None),
    _row(subject={"iin": valid_iin(2), "language": "ru", "contact": {"webhook": "https://a.kz/h"}}),
    _row(subject={"iin": valid_iin(3), "language": "en",
                  "contact": {"email": "a@b.kz", "webhook": "https://a.kz/h"}}),
    _row(subject={"iin": valid_iin(4), "language": "en", "contact": {"email": None, "webhook": "https://a.kz/h"}}),
    _row(features={"a": 1, "b": 2.5, "c": True, "d": "x"}),
])
def test_the_hashed_body_is_the_dump_a_single_call_would_hash(raw: dict[str, Any]) -> None:
    row = BatchRow.model_validate(raw)
    # What intake hashed before: the row's dump without its key, and without "monitoring" when there are none.
    expected = {k: v for k, v in row.model_dump(exclude_none=True).items()
                if k != "idempotency_key" and not (k == "monitoring" and not v)}
    got = _body(row)
    assert got == expected
    assert repr(sorted(got.items())) == repr(sorted(expected.items()))  # the same types too (1 vs 1.0, True vs 1)


def test_the_subject_reference_is_the_hmac_it_always_was() -> None:
    key = bytes(range(32))
    for n in range(50):
        iin = valid_iin(n)
        assert subject_ref(iin, key) == hmac.new(key, iin.encode("ascii"), hashlib.sha256).hexdigest()


JSON_VALUES: list[Any] = [
    {"b": 1, "a": [1.5, 2, True, None, "ä ü €", {"z": {}, "y": []}]}, {"x": 1e16, "y": -0.0, "z": 2**70},
    {"email": "p1@example.kz"}, {"email": "a@b.kz", "webhook": "https://ä.kz/h\u2028"}, {}, {"k": "\"\\\n\t"},
]


def test_the_encoders_made_once_write_what_json_dumps_wrote() -> None:
    for value in JSON_VALUES:
        assert decisions.request_hash("m", value) == hashlib.sha256(json.dumps(
            ("m", value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
        assert canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                                   allow_nan=False)
        key = new_data_key(bytes(32), "dec_x")
        sealed = encrypt_contact(key, value)
        opened = AESGCM(key.key).decrypt(sealed[1:13], sealed[13:], b"dec_x")
        assert opened == json.dumps(value, sort_keys=True).encode()
    with pytest.raises(ValueError, match="Out of range float"):
        canonical_json({"x": math.nan})  # still refused: a record never holds NaN


def test_a_commitment_is_the_hmac_it_always_was() -> None:
    for value in JSON_VALUES:
        key = bytes(range(32))
        subkey = hmac.new(key, b"gateway commitment v1", hashlib.sha256).digest()
        expected = hmac.new(subkey, json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                            .encode("utf-8"), hashlib.sha256).hexdigest()
        assert commitment(key, value) == expected


def test_a_data_keys_commitments_are_the_commitments_of_its_key() -> None:
    key = new_data_key(bytes(32), "dec_x")
    for value in JSON_VALUES:
        assert key.commitment(value) == commitment(key.key, value)
    assert new_data_key(bytes(32), "dec_y").commitment({}) != key.commitment({})


def test_a_contact_opened_with_its_unwrapped_key_is_the_contact_decrypt_contact_gives() -> None:
    deployment = bytes(range(32))
    key = new_data_key(deployment, "dec_x")
    sealed = encrypt_contact(key, {"email": "p1@example.kz"})
    legacy = cipher(deployment).encrypt(b'{"email": "old@example.kz"}', record_id="dec_x")
    for blob in (sealed, legacy, None):
        expected = decrypt_contact(deployment, "dec_x", blob, key.wrapped)
        assert open_contact(deployment, unwrap_data_key(deployment, "dec_x", key.wrapped), "dec_x", blob) == expected
    assert open_contact(deployment, key, "dec_x", sealed) == {"email": "p1@example.kz"}
    assert open_contact(deployment, None, "dec_x", sealed) == {} == decrypt_contact(deployment, "dec_x", sealed, None)
    assert open_contact(deployment, None, "dec_x", legacy) == {"email": "old@example.kz"}
    values = {"sex": "f"}
    assert open_monitoring(key, encrypt_monitoring(key, values)) == values
    assert decrypt_monitoring(deployment, "dec_x", encrypt_monitoring(key, values), key.wrapped) == values
