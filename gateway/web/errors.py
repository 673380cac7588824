"""Error pages: 400, 404, 410, 413, 429, 500 (and the rest) as HTML in the person's language.

JSON stays for /v1, the docs and the operations endpoints; every other path is a page.
"""

from __future__ import annotations

from flask import Flask, Response, make_response, render_template, request
from flask_babel import lazy_gettext
from flask_wtf.csrf import CSRFError

from gateway.web.common import choose_language

JSON_PREFIXES = ("/v1/", "/docs", "/openapi.json", "/healthz", "/readyz", "/metrics")

TITLES = {
    400: lazy_gettext("The request could not be understood"),
    401: lazy_gettext("Sign in to open this page"),
    403: lazy_gettext("You cannot open this page"),
    404: lazy_gettext("Page not found"),
    405: lazy_gettext("This page cannot be opened this way"),
    410: lazy_gettext("This link has expired"),
    413: lazy_gettext("What you sent is too large"),
    429: lazy_gettext("Too many requests"),
    500: lazy_gettext("Something went wrong on our side"),
    503: lazy_gettext("The service is temporarily unavailable"),
}
MESSAGES = {
    400: lazy_gettext("Go back, check what you entered and try again."),
    401: lazy_gettext("Officials sign in with the one-time link they were given or through their identity "
                      "provider; people sign in through the identity provider. Then open the page again."),
    403: lazy_gettext("Your role does not allow this page or action. Nothing was changed."),
    404: lazy_gettext("There is no such page, or you cannot open it with this link. If you came here from a "
                      "notice, open the link in the notice again; it works only for the decision it was sent for."),
    405: lazy_gettext("Go back and use the links and buttons on the page."),
    413: lazy_gettext("Shorten your text and send it again."),
    429: lazy_gettext("Please wait a minute and try again."),
    500: lazy_gettext("Nothing you sent was lost on your side. Please try again later; if it happens again, "
                      "contact the agency named in your notice."),
    503: lazy_gettext("Nothing was recorded. Please try again in a few minutes."),
}
CSRF_TITLE = lazy_gettext("The form has expired")
CSRF_MESSAGE = lazy_gettext("For your safety, forms work only for a limited time and only from this site. Go back, "
                            "reload the page and send the form again. Nothing was recorded.")


def is_page(path: str) -> bool:
    return not path.startswith(JSON_PREFIXES)


def render_error(status: int, err: Exception) -> Response | None:
    """The error page for a page path; None for JSON paths (the caller answers JSON)."""
    if not is_page(request.path):
        return None
    # Never the language of a decision the session holds: an error page must read the same whether or
    # not the decision exists (the person's own choice, ?lang= or the browser's languages decide).
    choose_language()
    if isinstance(err, CSRFError):
        title, message = CSRF_TITLE, CSRF_MESSAGE
    else:
        title = TITLES.get(status) or TITLES[500 if status >= 500 else 400]
        message = MESSAGES.get(status) or MESSAGES[500 if status >= 500 else 400]
    resp = make_response(render_template("web/error.html", title=title, message=message, status=status), status)
    headers = getattr(err, "get_headers", None)
    if status in (405, 429) and callable(headers):
        for name, value in headers():
            if name.lower() in ("allow", "retry-after"):
                resp.headers[name] = value
    return resp


def init_app(app: Flask) -> None:
    app.extensions["gateway.error_page"] = render_error
