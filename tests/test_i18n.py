"""Every message the gateway can show exists in Kazakh and Russian, with the same placeholders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir

from gateway.i18n import catalog

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"
METHODS = [("**/migrations/**", "ignore"), ("**.py", "python"), ("**/templates/**.html", "jinja2"),
           ("**/templates/**.txt", "jinja2")]
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def used_message_ids() -> set[str]:
    ids: set[str] = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        str(GATEWAY), method_map=METHODS, keywords=KEYWORDS, options_map={"**/templates/**": {"extensions": ""}}
    ):
        for part in message if isinstance(message, tuple) else (message,):
            if part:
                ids.add(part)
    return ids


def test_the_code_uses_translated_messages() -> None:
    assert len(used_message_ids()) >= 20  # the extraction itself works (it would find nothing if it broke)


@pytest.mark.parametrize("lang", ["kk", "ru"])
def test_catalog_is_complete(lang: str) -> None:
    translations = catalog(lang)
    missing = sorted(m for m in used_message_ids() if m not in translations or not translations[m].string)
    assert missing == [], f"{lang} lacks translations for: {missing}"


@pytest.mark.parametrize("lang", ["kk", "ru"])
def test_translations_keep_the_placeholders(lang: str) -> None:
    wrong = []
    for message in catalog(lang):
        if message.id and message.string and (
                set(PLACEHOLDER.findall(str(message.id))) != set(PLACEHOLDER.findall(str(message.string)))):
            wrong.append(message.id)
    assert wrong == []


@pytest.mark.parametrize("lang", ["kk", "ru"])
def test_no_stale_messages(lang: str) -> None:
    used = used_message_ids()
    stale = sorted(str(m.id) for m in catalog(lang) if m.id and m.id not in used)
    assert stale == [], f"{lang} has messages no code uses: {stale}"


def test_kazakh_is_written_with_kazakh_letters() -> None:
    text = " ".join(str(m.string) for m in catalog("kk") if m.id)
    assert {"ә", "ұ", "қ", "ғ", "ң", "ө", "і"} <= set(text)


def test_page_templates_and_code_are_checked_too() -> None:
    """The pages (gateway/templates/web, gateway/web) are part of what must be complete in kk and ru."""
    used = used_message_ids()
    assert "Skip to the main content" in used  # templates/web/base.html
    assert "Choose at least one reason." in used  # gateway/web/forms.py
    assert "waiting for a reviewer" in used  # gateway/web/labels.py (lazy_gettext)
