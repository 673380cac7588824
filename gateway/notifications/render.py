"""Build the message for a notification of any kind, in the person's language (kk, ru, en).

The content is assembled here as plain values (dates already formatted in the person's language), then
written out by Jinja templates ``notices/<kind>.txt`` and ``notices/<kind>.html`` under
``force_locale``. The webhook payload carries the same content as structured fields plus the rendered
text, so an agency relaying it shows exactly what an email would have said.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from babel.dates import format_date
from cryptography.exceptions import InvalidTag
from flask import render_template
from flask_babel import force_locale
from markupsafe import Markup
from sqlalchemy import select

from gateway import deadlines, i18n, keystore, links, registry
from gateway.auth import capability_token
from gateway.contacts import decrypt_contact
from gateway.extensions import db
from gateway.ids import isoformat
from gateway.manifest import Manifest, RegressionPolicy
from gateway.models import ApiClient, Decision, ReviewRequest
from gateway.notifications.channels.base import Message, PermanentFailure
from gateway.settings import current_settings

DECISION_NOTICE = "decision_notice"
REVIEW_RECEIVED = "review_received"
REVIEW_EXTENDED = "review_extended"
REVIEW_OUTCOME = "review_outcome"
REVIEW_WITHDRAWN = "review_withdrawn"
KINDS = (DECISION_NOTICE, REVIEW_RECEIVED, REVIEW_EXTENDED, REVIEW_OUTCOME, REVIEW_WITHDRAWN)
REVIEW_KINDS = (REVIEW_RECEIVED, REVIEW_EXTENDED, REVIEW_OUTCOME, REVIEW_WITHDRAWN)
LANGUAGES = ("kk", "ru", "en")
AGENCY_OUTCOME = "agency_outcome"  # the signed callback to the agency: a held decision's final outcome
CONFIRMED = ("confirmed", "changed")


@dataclass(frozen=True)
class Job:
    """A claimed notification row, as plain values."""

    id: str
    decision_id: str
    kind: str
    channel: str
    language: str
    attempts: int
    created_at: dt.datetime
    context: dict[str, Any] | None = None


@dataclass(frozen=True)
class Prefetched:
    """What the notices of one claimed batch are about, read in three queries instead of three per notice.

    Decisions are detached from the session (plain values: the dispatcher ends its read transaction before
    every send, which would expire them); ``wrapped`` holds the data keys that still exist."""

    decisions: dict[str, Decision] = field(default_factory=dict)
    agencies: dict[str, str] = field(default_factory=dict)  # API client id -> its body
    wrapped: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, jobs: Sequence[Job]) -> Prefetched:
        ids = sorted({job.decision_id for job in jobs})
        if not ids:
            return cls()
        decisions = {d.id: d for d in db.session.execute(select(Decision).where(Decision.id.in_(ids))).scalars()}
        for decision in decisions.values():
            db.session.expunge(decision)
        clients = sorted({d.client_id for d in decisions.values()})
        agencies = {cid: body for cid, body in db.session.execute(
            select(ApiClient.id, ApiClient.body).where(ApiClient.id.in_(clients))).all()}
        return cls(decisions, agencies, keystore.wrapped_many(ids))


@functools.cache
def _template_gettext(lang: str, autoescape: bool) -> Callable[..., str]:
    """The templates' ``_()`` for `lang`'s catalog and one template's escaping: what Flask-Babel installs
    (Jinja's newstyle gettext: escaped under autoescape, always %-formatted), passed to the template as ``_``.

    Passed as ``_`` rather than as ``gettext`` behind Jinja's ``_`` alias, and not marked ``pass_context``,
    so that each of a notice's 36 calls is one plain call instead of two context dispatches (about a third
    of the templates' rendering time); each message is translated (and wrapped in Markup) once per process."""
    catalog = i18n.translations(lang)

    @functools.cache
    def translated(string: str) -> str:
        rv = catalog.ugettext(string)
        return Markup(rv) if autoescape else rv

    def gettext(string: str, **variables: Any) -> str:
        return translated(string) % variables

    return gettext


@functools.lru_cache(maxsize=1024)
def _long_date(day: dt.date, lang: str) -> str:
    """`day` written out in `lang` (Babel's "long" format): the same few dates recur in every notice of a day."""
    return format_date(day, "long", locale=lang)


def _subject(kind: str, content: dict[str, Any]) -> str:
    _ = _template_gettext(content["language"], False)  # Flask-Babel's gettext, without its per-call lookups
    if kind == DECISION_NOTICE:
        return _("Notice of an automated decision: %(outcome)s", outcome=content["outcome"]["label"])
    if kind == REVIEW_RECEIVED:
        return _("Your request for a human review of decision %(decision_id)s was received",
                 decision_id=content["decision_id"])
    if kind == REVIEW_EXTENDED:
        return _("The human review of your decision was extended to %(date)s", date=content["review"]["due_on"])
    if kind == REVIEW_WITHDRAWN:
        return _("Your request for a human review of decision %(decision_id)s was withdrawn",
                 decision_id=content["decision_id"])
    return _("The outcome of the human review of decision %(decision_id)s", decision_id=content["decision_id"])


def _collapse_blank_lines(text: str) -> str:
    """Runs of blank lines as one (lines of template tags leave them): ``re.sub(r"\\n{3,}", "\\n\\n", text)``
    with str.replace, a few times cheaper on a notice."""
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def local_date(at: dt.datetime) -> dt.date:
    """The calendar date of `at` where the person lives (the deployment's time zone)."""
    return deadlines.local_date(at, current_settings().zone)


def recipient(decision: Decision, channel: str, prefetched: Prefetched | None = None) -> str:
    """Decrypt the decision's contact details and return the address for `channel` (never log it)."""
    if decision.contact_ciphertext is None:
        raise PermanentFailure("the contact details of this decision were erased")
    wrapped = prefetched.wrapped.get(decision.id) if prefetched is not None else keystore.wrapped(decision.id)
    try:
        contact = decrypt_contact(current_settings().contact_key, decision.id, decision.contact_ciphertext, wrapped)
    except (InvalidTag, ValueError):
        raise PermanentFailure("the contact details of this decision cannot be decrypted with the configured key") from None
    address = contact.get(channel)
    if not address:
        raise PermanentFailure(f"the decision has no {channel} contact")
    return str(address)


def _outcome(manifest: Manifest, code: str, lang: str) -> dict[str, str]:
    label = (manifest.policy.outcome_labels or {}).get(code)
    return {"code": code, "label": label.get(lang) if label else code}


def _announced(review: ReviewRequest, context: dict[str, Any] | None) -> tuple[dt.datetime, dt.date]:
    """The deadline a notice announces: the one stored when it was enqueued, else the review's (older rows).

    Shown as its last day (gateway.deadlines.last_day): due_at is the midnight that *ends* that day."""
    context = context or {}
    try:
        due_at = dt.datetime.fromisoformat(context["due_at"])
        due_on = dt.date.fromisoformat(context["due_on"])
    except (KeyError, TypeError, ValueError):
        due_at = review.extended_until or review.due_at
        due_on = deadlines.last_day(due_at, current_settings().zone)
    return due_at, due_on


def _review_content(review: ReviewRequest, manifest: Manifest, lang: str,
                    context: dict[str, Any] | None = None) -> dict[str, Any]:
    due_at, due_on = _announced(review, context)
    reasons = review.reasons or {}
    reason_text = reasons.get(lang) or reasons.get("ru") or reasons.get("kk") or next(iter(reasons.values()), None)
    return {
        "review_id": review.id,
        "status": review.status,
        "requested_at": isoformat(review.requested_at),
        "requested_on": _long_date(local_date(review.requested_at), lang),
        "due_at": isoformat(due_at),
        "due_on": _long_date(due_on, lang),
        "due_on_date": due_on.isoformat(),
        "extended": review.extended_until is not None,
        "extension_reason": review.extension_reason,
        "outcome": review.outcome,
        "new_outcome": _outcome(manifest, review.new_outcome, lang) if review.new_outcome else None,
        "reasons": reason_text,
        "point_of_view_considered": bool(review.point_of_view_considered),
        "resolved_at": isoformat(review.resolved_at) if review.resolved_at else None,
        "resolved_on": _long_date(local_date(review.resolved_at), lang) if review.resolved_at else None,
    }


def content_for(job: Job, decision: Decision, manifest: Manifest, review: ReviewRequest | None, lang: str) -> dict[str, Any]:
    """Everything a notice says, as structured values in `lang` (call under force_locale(lang))."""
    settings = current_settings()
    base = settings.base_url
    # With the person's personal link ("citizen"): a notice goes to the person only.
    decision_links = links.decision_links(base, decision.id, capability_token(decision.id, decision.subject_ref))
    deadline = deadlines.review_request_deadline(decision.created_at, settings)
    # The person follows pages, not the JSON API: the personal link opens a session and then the page
    # named by `next` (the API links stay in "links" for an agency relaying the webhook).
    personal = decision_links["citizen"]
    content: dict[str, Any] = {
        "kind": job.kind,
        "notification_id": job.id,
        "decision_id": decision.id,
        "language": lang,
        "automated": True,
        "decided_at": isoformat(decision.created_at),
        "decided_on": _long_date(local_date(decision.created_at), lang),
        "system": {
            "name": manifest.name,
            "version": manifest.version,
            "owner": manifest.notice.owner.get(lang),
            "purpose": manifest.notice.purpose.get(lang),
            # The version that decided, its register page in the notice's language.
            "notice_url": f"{base}/register/{manifest.name}/{manifest.version}?lang={lang}",
        },
        "outcome": _outcome(manifest, decision.outcome, lang),
        # A regression policy's value in its units (the outcome is its band); None for other kinds.
        "amount": (manifest.policy.amount(decision.score, lang) if isinstance(manifest.policy, RegressionPolicy)
                   else None),
        "effective_outcome": _outcome(manifest, decision.effective_outcome, lang),
        "adverse": decision.adverse,
        "role_of_ai": decision.role_of_ai,
        # A held decision an officer confirmed or changed: a person decided, with the system's help.
        "confirmed_by_officer": decision.confirmation in CONFIRMED,
        "sole_basis": decision.role_of_ai == "sole_basis" and decision.confirmation not in CONFIRMED,
        "rights": {
            "explanation_url": f"{personal}&next=explanation",
            "review_url": f"{personal}&next=review",
            "receipt_url": f"{personal}&next=receipt",  # the decision page's receipt: leaf index, proof, download
            "review_free": True,
            "review_request_by": deadline.isoformat(),
            "review_request_by_text": _long_date(deadline, lang),
        },
        "contact": manifest.notice.contact,
        "links": decision_links,
    }
    if review is not None:
        content["review"] = _review_content(review, manifest, lang, job.context)
    return content


def _review_for(job: Job) -> ReviewRequest:
    review_id = (job.context or {}).get("review_id")
    review = db.session.get(ReviewRequest, review_id) if review_id else None
    if review is None or review.decision_id != job.decision_id:
        raise PermanentFailure(f"a {job.kind} notification needs context.review_id naming a review of its decision")
    return review


def render(job: Job, decision: Decision, manifest: Manifest, review: ReviewRequest | None, *, recipient_address: str,
           agency: str) -> Message:
    """Render the notice in the notification's language: subject, text, HTML and the webhook payload."""
    if job.kind not in KINDS:
        raise PermanentFailure(f"unknown notification kind {job.kind!r}; known kinds: {', '.join(KINDS)}")
    lang = job.language if job.language in LANGUAGES else "ru"
    with force_locale(lang):
        content = content_for(job, decision, manifest, review, lang)
        subject = _subject(job.kind, content)
        text = render_template(f"notices/{job.kind}.txt", c=content, subject=subject, _=_template_gettext(lang, False))
        text = _collapse_blank_lines(text).strip() + "\n"
        html = render_template(f"notices/{job.kind}.html", c=content, subject=subject, _=_template_gettext(lang, True))
    payload = {
        "type": f"notification.{job.kind}",
        "timestamp": isoformat(job.created_at),
        "data": {**content, "subject": subject, "text": text},
    }
    return Message(id=job.id, kind=job.kind, language=lang, recipient=recipient_address, agency=agency,
                   subject=subject, text=text, html=html, payload=payload, created_at=job.created_at)


def agency_outcome(job: Job, decision: Decision, agency: str) -> Message:
    """The callback to the agency: the final outcome of a held decision (no personal data, no person's link)."""
    url = current_settings().agency_callback_urls.get(agency)
    if not url:
        raise PermanentFailure(f"no AGENCY_CALLBACK_URLS entry for agency {agency!r}")
    context = job.context or {}
    data = {
        "decision_id": decision.id, "event": context.get("event"), "case_id": context.get("review_id"),
        "model": {"name": decision.model_name, "version": decision.model_version},
        "outcome": decision.outcome, "effective_outcome": decision.effective_outcome,
        "confirmation": decision.confirmation, "reference": decision.reference,
        "links": links.decision_links(current_settings().base_url, decision.id),
    }
    text = f"decision {decision.id}: {context.get('event')}, effective outcome {decision.effective_outcome}\n"
    payload = {"type": f"decision.{context.get('event')}", "timestamp": isoformat(job.created_at), "data": data}
    return Message(id=job.id, kind=job.kind, language=job.language, recipient=url, agency=agency,
                   subject=f"decision {decision.id}: {context.get('event')}", text=text, html=f"<p>{text}</p>",
                   payload=payload, created_at=job.created_at)


def message_for(job: Job, prefetched: Prefetched | None = None) -> Message:
    """Read what the notice is about (or take it from the batch's `prefetched`) and render it (raises
    PermanentFailure when it can never be sent)."""
    if prefetched is not None and job.decision_id in prefetched.decisions:
        decision: Decision | None = prefetched.decisions[job.decision_id]
    else:
        decision, prefetched = db.session.get(Decision, job.decision_id), None
    if decision is None:
        raise PermanentFailure("the decision of this notification does not exist")
    if prefetched is not None and decision.client_id in prefetched.agencies:
        agency = prefetched.agencies[decision.client_id]
    else:
        agency = db.session.execute(select(ApiClient.body).where(ApiClient.id == decision.client_id)).scalar_one()
    if job.kind == AGENCY_OUTCOME:
        return agency_outcome(job, decision, agency)
    manifest = registry.manifest_of(decision.model_id)
    review = _review_for(job) if job.kind in REVIEW_KINDS else None
    address = recipient(decision, job.channel, prefetched)
    return render(job, decision, manifest, review, recipient_address=address, agency=agency)
