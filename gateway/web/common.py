"""What every page shares: the person's session, the page language, dates in their language and zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any
from urllib.parse import urlencode

from babel.dates import format_date, format_time
from babel.numbers import format_decimal
from flask import Flask, g, request, session
from flask_babel import refresh
from flask_wtf.csrf import CSRFProtect

from gateway.auth import Citizen, citizen_from_link
from gateway.db import Total
from gateway.errors import NotFound, Unauthorized
from gateway.settings import current_settings

NOT_FOUND = "The resource does not exist."
csrf = CSRFProtect()  # checked by the page blueprints only (WTF_CSRF_CHECK_DEFAULT is off)
MAX_HELD = 8  # capability tokens one session keeps (a person with several notices); the oldest goes first


# --- language -------------------------------------------------------------------------------------------

def choose_language(decision_language: str | None = None) -> str:
    """The page's language: ?lang= (remembered in the session), the session's choice, the decision's
    language, then Accept-Language; set it for gettext and return it.

    A page of no decision (the register, an error page) takes as "the decision's language" that of the
    latest personal link the session opened: the person who came from a Kazakh notice keeps reading Kazakh
    on the register and on an error page, whatever their browser's languages. It depends on the session
    only, never on the address, so an error page still reads the same whether a decision exists or not.
    """
    offered = list(current_settings().languages)
    if decision_language is None:
        decision_language = _latest_held_language()
    asked = request.args.get("lang")
    if asked is not None and asked in offered:
        if session.get("lang") != asked:
            session["lang"] = asked
        lang = asked
    elif session.get("lang") in offered:
        lang = str(session["lang"])
    elif decision_language in offered:
        lang = str(decision_language)
    else:
        lang = request.accept_languages.best_match(offered) or ("ru" if "ru" in offered else offered[0])
    g.page_language = lang
    refresh()  # forget a locale chosen before this point of the request
    return lang


def page_language() -> str:
    return str(g.get("page_language") or choose_language())


def switch_url(lang: str) -> str:
    """The current page in another language (the switch is a plain link: no script, no form)."""
    args = {k: v for k, v in request.args.items() if k not in ("lang", "token")}
    args["lang"] = lang
    return f"{request.path}?{urlencode(args)}"


# --- the person's session -------------------------------------------------------------------------------

def _held() -> dict[str, dict[str, str]]:
    held = session.get("caps")
    return held if isinstance(held, dict) else {}


def hold(decision_id: str, token: str, language: str) -> None:
    """Keep a checked capability token in the session (a signed, HttpOnly, SameSite=Strict cookie).

    The held links stay in the order they were opened (the app's JSON keeps insertion order:
    app.json.sort_keys is off), so the first is the one opened longest ago and the last the newest.
    """
    held = {k: v for k, v in _held().items() if k != decision_id}
    while len(held) >= MAX_HELD:
        held.pop(next(iter(held)))
    held[decision_id] = {"t": token, "l": language}
    session["caps"] = held
    session.permanent = True


def _latest_held_language() -> str | None:
    """The language of the decision whose personal link this session opened last."""
    entries = [e for e in _held().values() if isinstance(e, dict)]
    language = entries[-1].get("l") if entries else None
    return language if isinstance(language, str) else None


def held_language(decision_id: str) -> str | None:
    entry = _held().get(decision_id)
    return entry.get("l") if isinstance(entry, dict) else None


def citizen_for(decision_id: str) -> Citizen:
    """The person this session holds a live link for, for this decision; NotFound for everyone else.

    No session, another decision's link, another person's session and an expired link all end the same
    way as an id that does not exist: a page never says whether a decision exists.
    """
    entry = _held().get(decision_id)
    token = entry.get("t") if isinstance(entry, dict) else None
    if not isinstance(token, str):
        raise NotFound(NOT_FOUND)
    try:
        citizen = citizen_from_link(token)
    except Unauthorized:
        raise NotFound(NOT_FOUND) from None
    if citizen.decision_id != decision_id:
        raise NotFound(NOT_FOUND)
    return citizen


# --- formatting -----------------------------------------------------------------------------------------

def _zone() -> zoneinfo.ZoneInfo:
    return current_settings().zone


def local_datetime(at: dt.datetime | str | None) -> str:
    """A moment as the person reads it: in the deployment's time zone, in the page's language."""
    if at is None:
        return ""
    if isinstance(at, str):
        at = dt.datetime.fromisoformat(at)  # 3.11 reads "Z"
    local = at.astimezone(_zone())
    lang = page_language()
    # The locale's own date order (Kazakh: year first), as the notices write it, then the time.
    return f'{format_date(local.date(), "long", locale=lang)}, {format_time(local, "HH:mm", locale=lang)}'


def local_date(at: dt.datetime | dt.date | str | None) -> str:
    if at is None:
        return ""
    if isinstance(at, str):
        at = dt.datetime.fromisoformat(at)  # 3.11 reads "Z"
    day = at.astimezone(_zone()).date() if isinstance(at, dt.datetime) else at
    return format_date(day, "long", locale=page_language())


def last_day(at: dt.datetime | str | None) -> str:
    """The last day of a period whose deadline is the midnight that ends it (reviews.due_date)."""
    if at is None:
        return ""
    if isinstance(at, str):
        at = dt.datetime.fromisoformat(at)
    return local_date(at - dt.timedelta(microseconds=1))


def list_total(total: Total | int) -> str:
    """A list's size in the page's language: "10,000+" (or "10 000+") when counting stopped at the cap."""
    if isinstance(total, int):
        return format_decimal(total, locale=page_language())
    text = format_decimal(total.value, locale=page_language())
    return f"{text}+" if total.lower_bound else text


def init_app(app: Flask) -> None:
    app.add_template_filter(list_total, "list_total")
    app.add_template_filter(last_day, "last_day")
    app.add_template_filter(local_datetime, "local_datetime")
    app.add_template_filter(local_date, "local_date")

    @app.context_processor
    def _page_context() -> dict[str, Any]:
        return {"page_language": page_language, "switch_url": switch_url,
                "languages": [("kk", "Қазақша"), ("ru", "Русский"), ("en", "English")]}
