"""IIN validation, pseudonymisation and contact encryption."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.exceptions import InvalidTag

from gateway.contacts import ContactCipher
from gateway.identity import InvalidIIN, iin_check_digit, subject_ref, validate_iin

VALID = ["921029350851", "061211600012"]


@pytest.mark.parametrize("iin", VALID)
def test_valid_iins_pass(iin: str) -> None:
    assert validate_iin(iin) == iin


def test_check_digit_is_computed_with_first_weights() -> None:
    # 9*1+2*2+1*3+0*4+2*5+9*6+3*7+5*8+0*9+8*10+5*11 = 276 = 25*11 + 1
    assert iin_check_digit("92102935085") == 1


def test_second_weights_are_used_when_first_sum_is_ten() -> None:
    # Find an 11-digit prefix whose first weighted sum is 10 mod 11 and check the second weighting applies.
    prefix = next(
        p for p in (f"9210293{n:04d}" for n in range(10000))
        if sum(int(d) * w for d, w in zip(p, range(1, 12), strict=False)) % 11 == 10
    )
    second = sum(int(d) * w for d, w in zip(prefix, (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2), strict=False)) % 11
    assert iin_check_digit(prefix) == (None if second == 10 else second)


def test_prefix_with_no_valid_check_digit_is_invalid() -> None:
    prefix = next(
        p for p in (f"9210293{n:04d}" for n in range(10000))
        if sum(int(d) * w for d, w in zip(p, range(1, 12), strict=False)) % 11 == 10
        and sum(int(d) * w for d, w in zip(p, (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2), strict=False)) % 11 == 10
    )
    assert iin_check_digit(prefix) is None
    for last in "0123456789":
        with pytest.raises(InvalidIIN, match="check digit"):
            validate_iin(prefix + last)


@pytest.mark.parametrize(
    ("iin", "rule"),
    [
        ("921029350852", "check digit"),
        ("92102935085", "12 digits"),
        ("9210293508511", "12 digits"),
        ("92102935085a", "12 digits"),
        ("", "12 digits"),
        ("９２１０２９３５０８５１", "12 digits"),  # full-width digits are not ASCII digits
        ("921329350851", "date of birth"),  # month 13
        ("920230350851", "date of birth"),  # 30 February
        ("921029050851", "digit 7"),  # century digit 0
        ("921029750851", "digit 7"),  # century digit 7
    ],
)
def test_invalid_iins_name_the_rule(iin: str, rule: str) -> None:
    with pytest.raises(InvalidIIN, match=rule):
        validate_iin(iin)


def test_birth_date_in_the_future_is_invalid() -> None:
    # 061211600012 is born 2006-12-11: "today" before that date makes it impossible.
    with pytest.raises(InvalidIIN, match="future"):
        validate_iin("061211600012", today=dt.date(2006, 12, 10))
    assert validate_iin("061211600012", today=dt.date(2006, 12, 11))


def test_leap_day_is_a_real_date() -> None:
    prefix = "0002296"  # 2000-02-29, century digit 6 (2000s)
    body = prefix + "0001"
    digit = iin_check_digit(body)
    if digit is None:
        body = prefix + "0002"
        digit = iin_check_digit(body)
    assert digit is not None
    assert validate_iin(body + str(digit))


def test_subject_ref_is_stable_keyed_and_not_the_iin() -> None:
    key = b"k" * 32
    ref = subject_ref("921029350851", key)
    assert ref == subject_ref("921029350851", key)
    assert ref != subject_ref("061211600012", key)
    assert ref != subject_ref("921029350851", b"x" * 32)
    assert "921029350851" not in ref and len(ref) == 64


def test_contact_cipher_round_trips_and_binds_the_record() -> None:
    cipher = ContactCipher(b"\x01" * 32)
    blob = cipher.encrypt(b'{"email":"a@example.kz"}', record_id="dec_1")
    assert b"example.kz" not in blob
    assert cipher.decrypt(blob, record_id="dec_1") == b'{"email":"a@example.kz"}'
    with pytest.raises(InvalidTag):
        cipher.decrypt(blob, record_id="dec_2")  # a ciphertext moved to another record does not decrypt
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(InvalidTag):
        cipher.decrypt(tampered, record_id="dec_1")
    assert cipher.encrypt(b"x", record_id="r") != cipher.encrypt(b"x", record_id="r")  # fresh nonce each time


def test_contact_cipher_rejects_short_keys() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ContactCipher(b"short")
