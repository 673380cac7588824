"""Words for the codes a page shows (statuses, kinds, outcomes), in the page's language."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext

from gateway.manifest import Manifest, RegressionPolicy

NOTICE_KINDS = {
    "decision_notice": lazy_gettext("Notice of the decision"),
    "review_received": lazy_gettext("Review request received"),
    "review_extended": lazy_gettext("Review extended"),
    "review_outcome": lazy_gettext("Outcome of the review"),
    "review_withdrawn": lazy_gettext("Review request withdrawn"),
}
CHANNELS = {"email": lazy_gettext("email"), "webhook": lazy_gettext("the agency's message service"),
            "log": lazy_gettext("log")}
NOTICE_STATUS = {
    "pending": lazy_gettext("waiting to be sent"),
    "retrying": lazy_gettext("not delivered yet; will be tried again"),
    "delivered": lazy_gettext("delivered"),
    "dead": lazy_gettext("could not be delivered"),
}
REVIEW_STATUS = {
    "queued": lazy_gettext("waiting for a reviewer"),
    "claimed": lazy_gettext("being reviewed"),
    "resolved": lazy_gettext("decided"),
    "withdrawn": lazy_gettext("withdrawn by you"),
}
REVIEW_OUTCOMES = {
    "upheld": lazy_gettext("the decision was upheld"),
    "changed": lazy_gettext("the decision was changed"),
    "annulled": lazy_gettext("the decision was annulled"),
}
CONFIRM_OUTCOMES = {
    "confirmed": lazy_gettext("confirmed by the officer"),
    "changed": lazy_gettext("changed by the officer"),
}
GROUNDS = {
    "wrong_data": lazy_gettext("The data about me used in the decision is wrong or out of date"),
    "wrong_assessment": lazy_gettext("The data is right, but the assessment is wrong"),
    "other": lazy_gettext("Another reason (explain in your point of view)"),
}
READERS = {
    "citizen": lazy_gettext("You (through your personal link or sign-in)"),
    "agency": lazy_gettext("The agency that made the decision"),
    "reviewer": lazy_gettext("A reviewing officer"),
    "auditor": lazy_gettext("An auditor"),
    "admin": lazy_gettext("A gateway administrator"),
}
READ_WHAT = {
    "decision": lazy_gettext("the decision"),
    "explanation": lazy_gettext("the explanation"),
    "explanation.svg": lazy_gettext("the explanation chart"),
    "review": lazy_gettext("a review request"),
    "review_case": lazy_gettext("the review case"),
    "access_log": lazy_gettext("this access log"),
    "decision_list": lazy_gettext("the list of your decisions"),
    "data_export": lazy_gettext("the download of all data"),
    "receipt": lazy_gettext("the audit log receipt"),
    "recourse": lazy_gettext("what you could change"),
    "audit_search": lazy_gettext("an audit search result"),
    "audit_export": lazy_gettext("an audit export"),
    "audit_decision": lazy_gettext("the decision, in an audit"),
    "confirmation_case": lazy_gettext("the decision, held for an officer's confirmation"),
}
RISK = {"minimal": lazy_gettext("minimal"), "medium": lazy_gettext("medium"), "high": lazy_gettext("high")}
ROLE = {
    "sole_basis": lazy_gettext("The system's result is the sole basis of the decision: no person takes part in making it."),
    "supports_officer": lazy_gettext("The system's result supports an officer, who makes the decision."),
}


def label(table: dict[str, Any], code: str | None) -> str:
    """The word for a code, or the code itself when none is known (never an empty cell)."""
    if code is None:
        return ""
    found = table.get(code)
    return str(found) if found is not None else code


def reasons(given: dict[str, str] | None, lang: str) -> str:
    """The reviewer's reasons in the person's language (or the one they were given in)."""
    if not given:
        return ""
    return given.get(lang) or given.get("ru") or given.get("kk") or next(iter(given.values()), "")


def outcome(manifest: Manifest, code: str | None, lang: str) -> str:
    """An outcome as the model's manifest names it in `lang` ("annulled" is the review's word)."""
    if code is None:
        return ""
    if code == "annulled":
        return str(lazy_gettext("annulled (no longer in force)"))
    found = (manifest.policy.outcome_labels or {}).get(code)
    return found.get(lang) if found else code


def amount(manifest: Manifest, score: float | None, lang: str) -> str | None:
    """A regression model's value in its units (None for other policy kinds)."""
    policy = manifest.policy
    if not isinstance(policy, RegressionPolicy) or score is None:
        return None
    return policy.amount(score, lang)
