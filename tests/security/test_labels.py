"""Finding 13: a "$" in a feature label was parsed as mathtext (garbled, or every chart of the model failing
when it did not parse); a CR/LF in an outcome label broke every email notice of the model. The tests draw
the labels again and register the label again."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.manifest import load_manifest
from gateway.presenters.explanation import draw_svg
from tests.conftest import Gateway


def view(label: str) -> dict[str, Any]:
    factors = [{"label": label, "value": "5 000", "contribution": 0.12},
               {"label": "Срок, мес.", "value": "48", "contribution": -0.05}]
    return {"language": "ru", "output_space": "probability", "factors": factors, "confidential": None}


def glyphs(svg: bytes) -> set[bytes]:
    return set(re.findall(rb'id="(DejaVuSans[-\w]*)"', svg))


@pytest.mark.parametrize("label", ["Доход $\\frac$ в месяц", "Income in $$", "$\\undefinedcommand{x}$", "Сумма, $x$"])
def test_a_dollar_in_a_label_is_drawn_literally(gateway: Gateway, label: str) -> None:
    with gateway.app.test_request_context():
        svg = draw_svg(view(label))  # an invalid one raised (every chart of the model failed)
        # The glyph of "$": what a lone "$" (never mathtext) adds to the same chart.
        dollar = glyphs(draw_svg(view("Сумма, $"))) - glyphs(draw_svg(view("Сумма, ")))
    assert svg.startswith(b"<?xml") and dollar
    assert dollar <= glyphs(svg)  # the "$" is drawn, not taken as a maths delimiter


def registered_manifest(path: Path) -> dict[str, Any]:
    manifest, _ = load_manifest(path)
    data: dict[str, Any] = manifest.model_dump(mode="json", exclude_none=True)
    data.pop("artifact", None)
    data.get("explanation", {}).pop("background", None)
    return data


# Where the text goes, the text, and the field the refusal names (a policy's fields are named under its kind:
# the policy kinds are a discriminated union).
@pytest.mark.parametrize(("where", "text", "named"), [
    (("policy", "outcome_labels", "declined", "ru"), "Отказано\r\nBcc: everyone@example.kz",
     "policy.binary.outcome_labels.declined.ru"),
    (("policy", "outcome_labels", "approved", "kk"), "Мақұлданды\n", "policy.binary.outcome_labels.approved.kk"),
    (("features", 0, "labels", "ru"), "Счёт\x00", "features.0.labels.ru"),
    (("notice", "purpose", "ru"), "Оценка\x1b[2J", "notice.purpose.ru"),
])
def test_control_characters_in_labels_are_refused_at_registration(gateway: Gateway, german_manifest: Path,
                                                                  where: tuple[Any, ...], text: str,
                                                                  named: str) -> None:
    body = copy.deepcopy(registered_manifest(german_manifest)) | {"version": "2.0.0-labels", "activate": False}
    node: Any = body
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = text
    resp = gateway.client.post("/v1/models", json=body, headers=gateway.auth("admin"))
    assert resp.status_code == 422, resp.get_json()
    fields = [d["field"] for d in resp.get_json()["error"]["details"]]
    assert any(named in f for f in fields), fields


def test_a_multi_line_notice_text_is_still_accepted(german_manifest: Path) -> None:
    from gateway.manifest import Manifest

    data = registered_manifest(german_manifest)
    data["notice"]["limitations"]["ru"] = "Первая строка.\nВторая строка.\tКонец."
    data["sha256"] = "0" * 64
    assert Manifest.model_validate(data).notice.limitations.ru.count("\n") == 1
