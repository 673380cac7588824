"""Translations: gettext catalogs (kk, ru, en) read from .po files and compiled in memory.

Every ``gateway/translations/<lang>/LC_MESSAGES/*.po`` file is merged into that language's catalog, so
each capability (explanations, notices, ...) keeps its messages in a file of its own. Message ids are
English; Kazakh and Russian must be complete (tests/test_i18n.py extracts every id from the code and
templates and fails on any missing translation). Render a background message in the recipient's
language with ``flask_babel.force_locale(lang)``.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from flask import Flask, current_app, g, request
from flask_babel import Babel, Domain, get_locale

TRANSLATIONS = Path(__file__).parent / "translations"
LANGUAGES = ("kk", "ru", "en")

_lock = threading.Lock()
_compiled: dict[str, Translations] = {}


def catalog(lang: str) -> Catalog:
    """Merge every .po file of `lang` into one catalog (later files must not redefine a message)."""
    merged = Catalog(locale=lang)
    for path in sorted((TRANSLATIONS / lang / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as fh:
            part = read_po(fh, locale=lang)
        for message in part:
            if not message.id:
                continue
            if message.id in merged and merged[message.id].string != message.string:
                raise ValueError(f"{path.name}: message {message.id!r} is defined differently in another file")
            merged.add(message.id, message.string, context=message.context)
    return merged


def translations(lang: str) -> Translations:
    """Return the compiled translations of `lang` (compiled once per process)."""
    found = _compiled.get(lang)
    if found is None:
        with _lock:
            found = _compiled.get(lang)
            if found is None:
                buf = io.BytesIO()
                write_mo(buf, catalog(lang))
                buf.seek(0)
                found = Translations(fp=buf)
                _compiled[lang] = found
    return found


class CatalogDomain(Domain):  # type: ignore[misc]
    """Flask-Babel domain whose catalogs come from translations() rather than .mo files."""

    def get_translations(self) -> Translations | NullTranslations:
        locale = get_locale()
        if locale is None or locale.language not in LANGUAGES:
            return NullTranslations()
        return translations(locale.language)


def request_language() -> str:
    """The request's language: a page's choice (gateway.web), else ?lang=, Accept-Language, Russian."""
    chosen = g.get("page_language")
    if chosen:
        return str(chosen)
    offered = current_app.config["LANGUAGES"]
    lang = request.args.get("lang")
    if lang in offered:
        return str(lang)
    return str(request.accept_languages.best_match(offered) or ("ru" if "ru" in offered else offered[0]))


def init_app(app: Flask) -> None:
    babel = Babel(app, locale_selector=request_language, default_locale="ru")
    babel.domain_instance = CatalogDomain()  # replaces the cached .mo-based default domain
