"""The URLs of a decision: pure functions of the base URL, the decision id and (for the person) a token.

Pages are what a person opens (`/d/{id}` and below); the `/v1` URLs are the JSON twins for machine
clients. The person's personal link carries a capability token; whoever builds it signs it
(gateway.auth.capability_token) and passes it in, so this module reads nothing and signs nothing.
"""

from __future__ import annotations


def api_links(base_url: str, decision_id: str) -> dict[str, str]:
    """The JSON API's URLs of a decision (for agencies and other machine clients)."""
    base = base_url.rstrip("/")
    return {
        "decision": f"{base}/v1/decisions/{decision_id}",
        "explanation": f"{base}/v1/decisions/{decision_id}/explanation",
        "review": f"{base}/v1/decisions/{decision_id}/reviews",
    }


def decision_links(base_url: str, decision_id: str, citizen_token: str | None = None) -> dict[str, str]:
    """The API links of a decision, and the person's personal link when `citizen_token` is given."""
    result = api_links(base_url, decision_id)
    if citizen_token is not None:
        result["citizen"] = personal_link(base_url, decision_id, citizen_token)
    return result


def personal_link(base_url: str, decision_id: str, token: str) -> str:
    """The link in the person's notice: it opens their decision page and starts a session for it."""
    return f"{base_url.rstrip('/')}/d/{decision_id}?token={token}"


def model_link(base_url: str, name: str) -> str:
    return f"{base_url.rstrip('/')}/v1/models/{name}"
