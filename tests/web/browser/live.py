"""A real gateway for the browser: `gateway serve` on a known port, email to a real SMTP server.

Everything goes through the documented command line (tests/support/gateway_server.py): the instance
is made with `gateway init`, `gateway db upgrade`, `gateway models register`, `gateway keys create`, and
served by `gateway serve` (gunicorn, preloaded, the dispatcher thread on). Notices leave by SMTP to the
aiosmtpd server of tests/notifications, so the links a test opens are the links a person would read.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from gateway.auth import CAPABILITY_PREFIX, CAPABILITY_SALT, _subject_binding
from tests.notifications.conftest import Received, SMTPServer
from tests.support.gateway_server import (
    GATEWAY,
    UNLIMITED_RATES,
    Instance,
    ServerProcess,
    provision,
    run,
    sample_request,
    valid_iin,
)

MODEL = "german-credit"
SECRET_KEY = "5e" * 32  # known to the tests: they forge an expired capability token with it
# Outcome labels of the example model (examples/german_credit/features.toml).
OUTCOME_LABELS = {"approved": {"kk": "Мақұлданды", "ru": "Одобрено", "en": "Approved"},
                  "declined": {"kk": "Бас тартылды", "ru": "Отказано", "en": "Declined"}}
# Words of the notice that show it is in the person's language (gateway/translations; tests/notifications).
GREETING = {"kk": "Сәлеметсіз бе!", "ru": "Здравствуйте!", "en": "Hello,"}
LINK = re.compile(r"https?://[^\s<>\"']+/d/[A-Za-z0-9_-]+\?token=[A-Za-z0-9_.\-]+(?:&(?:amp;)?next=[a-z]+)?")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mail:
    """One email the SMTP server accepted, with what the tests read from it."""

    received: Received
    notification_id: str
    kind: str
    language: str
    text: str
    html: str

    @property
    def subject(self) -> str:
        return str(self.received.message["Subject"])

    def links(self) -> dict[str, str]:
        """The capability links of the plain-text part by their `next` page ("" for the decision page);
        the HTML part must carry the same ones."""
        found: dict[str, str] = {}
        for link in LINK.findall(self.text):
            query = parse_qs(urlsplit(link).query)
            found[query.get("next", [""])[0]] = link
            assert link in self.html or link.replace("&", "&amp;") in self.html, f"the HTML part lacks {link}"
        return found

    def personal_link(self) -> str:
        """The capability link to the decision page (…/d/{id}?token=…)."""
        found = self.links()
        assert "" in found, f"no personal link in the {self.kind} email:\n{self.text}"
        return found[""]


@dataclass
class LiveGateway:
    """A served gateway, its keys, the SMTP server its notices go to, and its database."""

    url: str
    instance: Instance
    server: ServerProcess
    smtp: SMTPServer
    agency_key: str
    reviewer_key: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    # --- the API, as the agency and the reviewer call it -------------------------------------------------

    def api(self, method: str, path: str, key: str, body: Any = None, **headers: str) -> httpx.Response:
        return self.http.request(method, self.url + path, json=body,
                                 headers={"Authorization": f"Bearer {key}", **headers})

    def decide(self, language: str, *, email: str | None = None, iin: str | None = None,
               **features: Any) -> dict[str, Any]:
        """A decision about a new person (an IIN and an address of their own); the API's 201 body."""
        request = sample_request()
        request["subject"] = {"iin": iin or valid_iin(secrets.randbelow(10**6)), "language": language,
                              "contact": {"email": email or f"person-{secrets.token_hex(6)}@example.kz"}}
        request["features"].update(features)
        request.pop("reference", None)
        resp = self.api("POST", f"/v1/models/{MODEL}/decisions", self.agency_key, request,
                        **{"Idempotency-Key": secrets.token_hex(12)})
        assert resp.status_code == 201, resp.text
        body: dict[str, Any] = resp.json()
        body["email"] = request["subject"]["contact"]["email"]
        # The person's link reaches the person only, in the notice (never the agency's answer); tests that do
        # not read it from the email sign the same link here, as the notice does.
        body.setdefault("links", {})["citizen"] = self.personal_link(body["decision_id"])
        return body

    def personal_link(self, decision_id: str) -> str:
        (ref,), = self.query("SELECT subject_ref FROM decisions WHERE id = ?", decision_id)
        serializer = URLSafeTimedSerializer([SECRET_KEY], salt=CAPABILITY_SALT)
        token = CAPABILITY_PREFIX + serializer.dumps({"d": decision_id, "s": _subject_binding(ref)})
        return f"{self.url}/d/{decision_id}?token={token}"

    def decision(self, decision_id: str) -> dict[str, Any]:
        resp = self.api("GET", f"/v1/decisions/{decision_id}", self.agency_key)
        assert resp.status_code == 200, resp.text
        found: dict[str, Any] = resp.json()
        return found

    def claim(self, review_id: str) -> dict[str, Any]:
        resp = self.api("POST", "/v1/reviews/claim", self.reviewer_key, {"review_id": review_id})
        assert resp.status_code == 200, resp.text
        case: dict[str, Any] = resp.json()
        assert case["review_id"] == review_id, case
        return case

    def resolve(self, review_id: str, fencing_token: int, **changes: Any) -> dict[str, Any]:
        body = {"fencing_token": fencing_token, "outcome": "changed", "new_outcome": "approved",
                "reasons": {"kk": "Жинақ шотының деректері түзетілді; табыс жеткілікті.",
                            "ru": "Данные о сбережениях исправлены; дохода достаточно.",
                            "en": "The savings data were corrected; the income is sufficient."},
                "point_of_view_considered": True} | changes
        resp = self.api("POST", f"/v1/reviews/{review_id}/resolve", self.reviewer_key, body)
        assert resp.status_code == 200, resp.text
        resolved: dict[str, Any] = resp.json()
        return resolved

    # --- what the gateway stored (read straight from its SQLite file) ------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(f"file:{self.instance.sqlite_path}?mode=ro", uri=True, timeout=30) as conn:
            return list(conn.execute(sql, params).fetchall())

    def execute(self, sql: str, *params: Any) -> None:
        """Change a row behind the gateway's back (to put a page in a state the API cannot reach quickly)."""
        with sqlite3.connect(self.instance.sqlite_path, timeout=30) as conn:
            conn.execute(sql, params)

    # --- the person's mailbox -------------------------------------------------------------------------

    def mails(self, to: str) -> list[Mail]:
        found = []
        for received in list(self.smtp.received):
            if to not in received.rcpt_tos:
                continue
            message = received.message
            notification_id = str(message["Message-ID"]).strip("<>").split("@")[0]
            rows = self.query("SELECT kind, language FROM notifications WHERE id = ?", notification_id)
            assert rows, f"the email {message['Message-ID']} names no notification of the gateway"
            text_part, html_part = message.get_body(("plain",)), message.get_body(("html",))
            assert text_part is not None and html_part is not None, "a notice has a text and an HTML part"
            found.append(Mail(received, notification_id, rows[0][0], rows[0][1],
                              text_part.get_content(), html_part.get_content()))
        return found

    def wait_mail(self, to: str, kind: str, timeout: float = 45) -> Mail:
        """The one email of `kind` to `to`, waiting for the dispatcher thread to deliver it."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.mails(to) if m.kind == kind]
            if found:
                assert len(found) == 1, f"{len(found)} {kind} emails to {to}"
                return found[0]
            if time.monotonic() > deadline:
                rows = self.query("SELECT kind, status, attempts, last_error FROM notifications")
                raise AssertionError(f"no {kind} email to {to} within {timeout:.0f} s; outbox: {rows}; "
                                     f"server log:\n{self.server.log_tail(3000)}")
            time.sleep(0.2)


# --- capability tokens --------------------------------------------------------------------------------

def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def token_payload(link: str) -> Any:
    """What a personal link grants (its decision and the subject it is bound to), its signature checked."""
    return URLSafeTimedSerializer(SECRET_KEY, salt=CAPABILITY_SALT).loads(token_of(link).removeprefix(CAPABILITY_PREFIX))


def expired_copy(link: str, *, days_ago: float) -> str:
    """The same link with its token signed `days_ago` days in the past (the gateway's key and salt)."""
    token = token_of(link)
    payload = URLSafeTimedSerializer(SECRET_KEY, salt=CAPABILITY_SALT).loads(token.removeprefix(CAPABILITY_PREFIX))
    past = int(time.time() - days_ago * 86400)

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return past

    old = CAPABILITY_PREFIX + URLSafeTimedSerializer(SECRET_KEY, salt=CAPABILITY_SALT, signer=PastSigner).dumps(payload)
    return link.replace(token, old)


def tampered_copy(link: str) -> str:
    """The same link with one character in the middle of the token's signature changed.

    (Not the last character: of its 6 bits only 4 are signature, so some changes there decode to the same
    bytes and the signature still verifies.)"""
    token = token_of(link)
    head, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return link.replace(token, f"{head}.{signature[:middle]}{swapped}{signature[middle + 1:]}")


# --- dates as the person reads them ---------------------------------------------------------------------

def due_day(review: dict[str, Any], timezone: str = "Asia/Almaty") -> dt.date:
    """The last day of the review period: `due_at` is the midnight (local) that ends it."""
    import zoneinfo

    at = dt.datetime.fromisoformat(str(review["due_at"])).astimezone(zoneinfo.ZoneInfo(timezone))
    return (at - dt.timedelta(microseconds=1)).date()


def spaces(text: str) -> str:
    """Text with every kind of space (Babel writes U+202F and U+00A0) as one plain space."""
    return re.sub(r"[\s\u00a0\u202f]+", " ", text)


def date_texts(day: dt.date, language: str) -> set[str]:
    """Ways a page may write `day` in `language` (Babel's formats and ISO)."""
    from babel.dates import format_date

    texts = {day.isoformat(), day.strftime("%d.%m.%Y")}
    for fmt in ("short", "medium", "long", "full"):
        texts.add(format_date(day, format=fmt, locale=language))
    return texts


# --- the server ---------------------------------------------------------------------------------------

def start_gateway(folder: Path, manifest: Path, smtp: SMTPServer, **extra_env: str) -> LiveGateway:
    """Provision an instance in `folder` and serve it on a free port; the caller stops `server`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**UNLIMITED_RATES, "GATEWAY_RATELIMIT_EXPLANATIONS": "100000000/minute",
           "GATEWAY_PUBLIC_BASE_URL": url, "GATEWAY_SECRET_KEY": SECRET_KEY,
           "GATEWAY_SMTP_HOST": "127.0.0.1", "GATEWAY_SMTP_PORT": str(smtp.port), "GATEWAY_SMTP_SECURITY": "none",
           "GATEWAY_NOTIFY_DISPATCHER_THREAD": "true", "GATEWAY_NOTIFY_ROUTES": "{}",
           "GATEWAY_NOTIFY_POLL_INTERVAL_S": "0.2", **extra_env}
    instance = provision(folder / "instance", manifest, client_name="browser-agency", extra_env=env)
    reviewer = run([str(GATEWAY), "keys", "create", "--role", "reviewer", "--name", "browser-reviewer",
                    "--body", "Review office"], env=instance.env).strip()
    assert reviewer.startswith("gwk_"), reviewer
    server = ServerProcess(argv=[str(GATEWAY), "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                           env=instance.env, log_path=folder / "gateway.log")
    server.start(timeout=120)
    return LiveGateway(url=url, instance=instance, server=server, smtp=smtp, agency_key=instance.key,
                       reviewer_key=reviewer)


