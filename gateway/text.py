"""Which characters free text may hold: none of the control characters, except line breaks and tabs where
the text is multi-line.

A NUL byte cannot be stored in PostgreSQL text (the database refuses the whole write), a CR or LF in a
label ends an email header, and other C0/C1 controls and lone surrogates only ever arrive by mistake or
on purpose. Refusing them where text enters (requests, manifests) keeps every later reader safe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.errors import ValidationFailed

# C0 controls, DEL, C1 controls and lone surrogates (Unicode categories Cc and Cs). Multi-line text keeps
# LF, CR and tab: browsers send a textarea's lines as CRLF.
_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

# The same rules as JSON Schema patterns, for generated clients and tests.
LINE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"


def forbidden_character(value: str, *, multiline: bool) -> str | None:
    """The first character `value` may not hold, as U+XXXX, or None when it is clean."""
    found = (_TEXT if multiline else _LINE).search(value)
    return f"U+{ord(found.group()):04X}" if found else None


def check_text(value: str, *, multiline: bool) -> str:
    """Return `value`, or raise ValueError naming the control character it holds."""
    found = forbidden_character(value, multiline=multiline)
    if found is not None:
        allowed = " (line breaks and tabs are allowed)" if multiline else ""
        raise ValueError(f"must not contain control characters; found {found}{allowed}")
    return value


def refuse_control_characters(values: Mapping[str, str | None], *, multiline: bool) -> None:
    """Raise ValidationFailed naming every field whose text holds a control character.

    The use cases call it on the text they store, so that every way in (the JSON API, the person's and the
    reviewers' web forms, the command line) gets the same 422 naming the field, never the database's refusal.
    """
    details = []
    for field, value in values.items():
        found = forbidden_character(value, multiline=multiline) if value is not None else None
        if found is not None:
            allowed = " (line breaks and tabs are allowed)" if multiline else ""
            details.append({"field": field, "rule": "pattern",
                            "message": f"must not contain control characters; found {found}{allowed}"})
    if details:
        raise ValidationFailed(f"{details[0]['field']} must not contain control characters", details=details)
