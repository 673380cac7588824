"""Identity of the affected person: IIN validation and pseudonymisation (contacts: gateway.contacts)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

# Digit 7 of an IIN encodes the century of birth (and sex): 1-2 → 1800s, 3-4 → 1900s, 5-6 → 2000s.
_CENTURY = {"1": 1800, "2": 1800, "3": 1900, "4": 1900, "5": 2000, "6": 2000}
_WEIGHTS_FIRST = tuple(range(1, 12))
_WEIGHTS_SECOND = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)


class InvalidIIN(ValueError):
    """The IIN is not a valid Kazakhstani individual identification number."""


def iin_check_digit(first11: str) -> int | None:
    """Return the check digit for the first 11 digits, or None when no valid digit exists."""
    digits = [int(c) for c in first11]
    s = sum(d * w for d, w in zip(digits, _WEIGHTS_FIRST, strict=False)) % 11
    if s == 10:
        s = sum(d * w for d, w in zip(digits, _WEIGHTS_SECOND, strict=False)) % 11
        if s == 10:
            return None
    return s


def validate_iin(iin: str, *, today: dt.date | None = None) -> str:
    """Return the IIN when it is valid, else raise InvalidIIN saying which rule it breaks."""
    if not isinstance(iin, str) or len(iin) != 12 or not iin.isascii() or not iin.isdigit():
        raise InvalidIIN("an IIN is exactly 12 digits")
    century = _CENTURY.get(iin[6])
    if century is None:
        raise InvalidIIN("digit 7 of an IIN (century and sex) must be 1 to 6")
    try:
        born = dt.date(century + int(iin[0:2]), int(iin[2:4]), int(iin[4:6]))
    except ValueError:
        raise InvalidIIN("the first 6 digits of an IIN must be a real date of birth (YYMMDD)") from None
    if born > (today or dt.datetime.now(dt.UTC).date()):
        raise InvalidIIN("the date of birth in the IIN is in the future")
    expected = iin_check_digit(iin[:11])
    if expected is None or expected != int(iin[11]):
        raise InvalidIIN("the IIN's check digit is wrong")
    return iin


def subject_ref(iin: str, key: bytes) -> str:
    """Return the keyed pseudonym (HMAC-SHA256) under which a person's decisions are stored."""
    # hmac.digest: OpenSSL's one-shot HMAC, the same value as hmac.new(...).hexdigest() without its Python set-up
    # (a batch computes one per row).
    return hmac.digest(key, iin.encode("ascii"), hashlib.sha256).hex()
