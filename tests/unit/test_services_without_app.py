"""Services and leaf helpers called with plain values: no Flask app, no database, no request."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from gateway import deadlines, links, registry
from gateway.config import DEFAULTS
from gateway.contacts import (
    ContactCipher,
    cipher,
    decrypt_contact,
    encrypt_contact,
    new_data_key,
    reencrypt_legacy,
    unwrap_data_key,
)
from gateway.errors import ModelUnavailable
from gateway.manifest import load_manifest
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings(**changes: object) -> Settings:
    config = dict(DEFAULTS, SUBJECT_KEY_BYTES=b"\x01" * 32, CONTACT_KEY_BYTES=b"\x02" * 32, SECRET_KEY="s" * 64)
    config.update(changes)
    return Settings.from_config(config)


def test_settings_are_frozen_and_typed() -> None:
    s = settings(PUBLIC_BASE_URL="https://gw.example/")
    assert s.base_url == "https://gw.example"
    assert s.languages == ("kk", "ru", "en")
    assert s.review_period_working_days == 15
    with pytest.raises(AttributeError):
        s.timezone = "UTC"  # type: ignore[misc]


def test_due_date_counts_working_days_in_the_deployments_zone() -> None:
    s = settings()
    # Requested on Friday 19 December 2025 at 20:00 UTC: already Saturday 20 December in Almaty (UTC+5).
    requested = dt.datetime(2025, 12, 19, 20, 0, tzinfo=dt.UTC)
    due = deadlines.due_date(requested, s)
    local = due.astimezone(s.zone)
    # 15 working days after Saturday 20 Dec: 22 Dec … skipping the weekends and 1–2 January and 7 January.
    assert local.time() == dt.time(0, 0)  # the midnight that ends the last day
    last_day = local.date() - dt.timedelta(days=1)
    assert s.calendar.working_days_between(deadlines.local_date(requested, s.zone), last_day) == 15
    assert s.calendar.is_working_day(last_day)
    # A deployment with a shorter period gets an earlier deadline from the same call.
    assert deadlines.due_date(requested, s.replace(review_period_working_days=5)) < due


def test_add_months_keeps_the_day_or_takes_the_months_last() -> None:
    assert deadlines.add_months(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)
    assert deadlines.add_months(dt.date(2026, 11, 15), 2) == dt.date(2027, 1, 15)


def test_review_request_deadline_is_the_window_after_the_local_decision_date() -> None:
    s = settings(REVIEW_REQUEST_WINDOW_DAYS=30)
    decided = dt.datetime(2026, 3, 31, 22, 30, tzinfo=dt.UTC)  # 1 April in Almaty
    assert deadlines.review_request_deadline(decided, s) == dt.date(2026, 5, 1)


def test_links_are_pure() -> None:
    got = links.decision_links("https://gw.example/", "dec_1", "gwc_token")
    assert got == {
        "decision": "https://gw.example/v1/decisions/dec_1",
        "explanation": "https://gw.example/v1/decisions/dec_1/explanation",
        "review": "https://gw.example/v1/decisions/dec_1/reviews",
        "citizen": "https://gw.example/d/dec_1?token=gwc_token",
    }
    assert "citizen" not in links.decision_links("https://gw.example", "dec_1")


def test_contacts_round_trip_and_are_bound_to_their_decision() -> None:
    key = settings().contact_key
    data_key = new_data_key(key, "dec_a")
    blob = encrypt_contact(data_key, {"email": "a@example.kz"})
    assert b"example" not in blob and data_key.key not in data_key.wrapped
    assert decrypt_contact(key, "dec_a", blob, data_key.wrapped) == {"email": "a@example.kz"}
    with pytest.raises(InvalidTag):
        decrypt_contact(key, "dec_b", blob, data_key.wrapped)  # the record id is bound in: no copying between rows
    assert decrypt_contact(key, "dec_a", None, data_key.wrapped) == {}
    # Crypto-shredding: without the wrapped data key the ciphertext is unreadable, with the deployment key too.
    assert decrypt_contact(key, "dec_a", blob, None) == {}
    with pytest.raises(InvalidTag):
        ContactCipher(key, b"\x02").decrypt(blob, record_id="dec_a")


def test_contacts_written_before_data_keys_stay_readable_and_can_be_rewrapped() -> None:
    key = settings().contact_key
    legacy = cipher(key).encrypt(b'{"email": "old@example.kz"}', record_id="dec_old")
    assert legacy[:1] == b"\x01"
    assert decrypt_contact(key, "dec_old", legacy, None) == {"email": "old@example.kz"}
    blob, wrapped = reencrypt_legacy(key, "dec_old", legacy)
    assert blob[:1] == b"\x02" and decrypt_contact(key, "dec_old", blob, wrapped) == {"email": "old@example.kz"}
    assert decrypt_contact(key, "dec_old", blob, None) == {}


def test_commitments_are_keyed_by_the_decision_data_key() -> None:
    key = settings().contact_key
    a, b = new_data_key(key, "dec_a"), new_data_key(key, "dec_b")
    inputs = {"age": 35, "savings": "lt_100"}
    assert a.commitment(inputs) == a.commitment(dict(reversed(inputs.items())))  # canonical JSON
    assert a.commitment(inputs) != b.commitment(inputs)  # a guess can't be tested without the key
    assert a.commitment(inputs) != a.commitment(inputs | {"age": 36})
    unwrapped = unwrap_data_key(key, "dec_a", a.wrapped)
    assert unwrapped is not None and unwrapped.commitment(inputs) == a.commitment(inputs)


def test_risk_assessment_rule_takes_its_period_as_a_value(german_manifest: Path) -> None:
    manifest, _ = load_manifest(german_manifest)
    assert manifest.risk_class == "high" and manifest.assessed_on is not None
    today = manifest.assessed_on + dt.timedelta(days=100)
    registry.check_risk_assessment(manifest, 365, today)
    with pytest.raises(ModelUnavailable, match="older than 30 days"):
        registry.check_risk_assessment(manifest, 30, today)


def test_gateway_help_before_init_prints_help_and_a_hint(tmp_path: Path) -> None:
    gateway = Path(sys.executable).parent / "gateway"
    env = {"PATH": str(Path(sys.executable).parent), "GATEWAY_INSTANCE_PATH": str(tmp_path / "instance")}
    done = subprocess.run([str(gateway), "--help"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "serve" in done.stdout and "worker" in done.stdout
    assert "Hint: GATEWAY_SUBJECT_KEY is not set" in done.stdout and "gateway init" in done.stdout
