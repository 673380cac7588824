"""Broken object-level authorisation, attacked: every principal × every route with an id × each method.

The expectations below are written out independently of gateway.access (they are the specification
the code is checked against). For every request the matrix asserts:

- a caller who may not see the object gets 404 with a body (and headers) byte-identical to the answer
  for an id that does not exist, so existence never leaks;
- a caller who sees it but may not take the action gets 403 (never a success);
- a caller who may gets neither 401, 403 nor 404 (the action itself may still conflict: 409);
- and, in total, no successful cross-principal access.

Routes are enumerated from the app's URL map: a new route with a path parameter that is not classified
here fails the test, so it cannot ship unexamined.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gateway.extensions import db
from tests.conftest import Gateway
from tests.oversight.test_confirmation import register_low_autonomy
from tests.support.citizens import IdentityProvider, notice_token, valid_iin
from tests.support.registration import open_incident
from tests.web.support import expired_token

pytestmark = [
    pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True),
    # The matrix sends ~1,500 requests per principal set; the limits have tests of their own.
    pytest.mark.gateway_config(RATELIMIT_PER_CALLER="100000/minute", RATELIMIT_EXPLANATIONS="100000/minute"),
]

IIN_1, IIN_2 = "921029350851", "061211600012"
IIN_3 = valid_iin("85030540012")
MISSING_DECISION = "dec_AAAAAAAAAAAAAAAAAAAAAA"
MISSING_REVIEW = "rev_AAAAAAAAAAAAAAAAAAAAAA"
READERS = frozenset({"agency", "reviewer", "auditor", "citizen"})
REVIEW_REQUEST = {"point_of_view": "Деректер ескірген.", "contest_grounds": ["wrong_data"]}

# (rule, method) -> the kinds of caller who may, when they see the object.
DECISION_ROUTES: dict[tuple[str, str], frozenset[str]] = {
    ("/v1/decisions/<decision_id>", "GET"): READERS,
    ("/v1/decisions/<decision_id>/explanation", "GET"): READERS,
    ("/v1/decisions/<decision_id>/explanation.svg", "GET"): READERS,
    ("/v1/decisions/<decision_id>/recourse", "GET"): READERS,
    ("/v1/decisions/<decision_id>/receipt", "GET"): READERS,
    ("/v1/decisions/<decision_id>/access-log", "GET"): frozenset({"citizen", "auditor"}),
    ("/v1/decisions/<decision_id>/reviews", "POST"): frozenset({"citizen", "agency"}),
    ("/v1/decisions/<decision_id>/handover-links", "POST"): frozenset({"agency"}),
    ("/v1/decisions/<decision_id>/ground-truth", "POST"): frozenset({"agency"}),
    ("/v1/decisions/<decision_id>/hold", "POST"): frozenset({"auditor"}),
    ("/v1/decisions/<decision_id>/hold", "DELETE"): frozenset({"auditor"}),
}
# Routes of an object below a decision, whose id the matrix cannot make up: their access rules are those of
# the decision (tests/security/test_person_link.py tries them).
NESTED_ROUTES = {("/v1/decisions/<decision_id>/handover-links/<handover_id>", "DELETE")}
REVIEW_ROUTES: dict[tuple[str, str], frozenset[str]] = {
    ("/v1/reviews/<review_id>", "GET"): READERS,
    # Named under its decision as well: both ids are filled in from the review (the person's own action).
    ("/v1/decisions/<decision_id>/reviews/<review_id>/withdraw", "POST"): frozenset({"citizen"}),
    **{(f"/v1/reviews/<review_id>/{action}", "POST"): frozenset({"reviewer"})
       for action in ("renew", "release", "resolve", "extend", "rescore", "confirm")},
}
# A decision batch: seen by the agency (body) that submitted it only; everyone else gets the 404 of no batch.
BATCH_ROUTES: dict[tuple[str, str], frozenset[str]] = {
    ("/v1/models/<name>/decision-batches/<batch_id>", "GET"): frozenset({"agency"}),
    ("/v1/models/<name>/decision-batches/<batch_id>/results", "GET"): frozenset({"agency"}),
}
MISSING_BATCH = "bat_AAAAAAAAAAAAAAAAAAAAAA"
# Objects whose existence is public (the algorithm register, content-addressed uploads): only role-gated.
PUBLIC_OBJECT_ROUTES: dict[tuple[str, str], frozenset[str] | None] = {
    ("/v1/models/<name>", "GET"): None,  # the public register: anyone reads it
    ("/v1/models/<name>/decisions", "POST"): frozenset({"agency"}),
    ("/v1/models/<name>/decision-batches", "POST"): frozenset({"agency"}),
    ("/v1/models/<name>/decision-batches", "GET"): frozenset({"agency"}),  # each agency lists its own only
    ("/v1/models/<name>/suspend", "POST"): frozenset({"admin"}),
    ("/v1/blobs/<sha256>", "PUT"): frozenset({"admin"}),
    # The incident register: the owner's and the auditor's, no person's data.
    ("/v1/incidents/<incident_id>", "GET"): frozenset({"admin", "auditor"}),
    ("/v1/incidents/<incident_id>/status", "POST"): frozenset({"admin", "auditor"}),
}
# The person's pages (gateway.web): reached with the session the personal link starts, never a header.
PAGE_ROUTES: dict[tuple[str, str], str] = {
    ("/d/<decision_id>", "GET"): "",
    ("/d/<decision_id>/explanation", "GET"): "/explanation",
    ("/d/<decision_id>/review", "GET"): "/review",
    ("/d/<decision_id>/review", "POST"): "/review",
    ("/d/<decision_id>/review/withdraw", "GET"): "/review/withdraw",
    ("/d/<decision_id>/review/withdraw", "POST"): "/review/withdraw",
    ("/d/<decision_id>/data.json", "GET"): "/data.json",
    ("/d/<decision_id>/receipt.json", "GET"): "/receipt.json",
}
PUBLIC_PAGES = {("/register/<name>/<version>", "GET"),  # the register: public, like GET /v1/models/<name>
                # one-time sign-in links: the token is the credential (tests/web/test_console_signin.py)
                ("/signin/<token>", "GET"), ("/signin/<token>", "POST")}
# The officials' pages (gateway/web/console.py, audit.py): a signed-in official of one role, never a header.
# (rule, method) -> the path opened: {review} a review case, {confirmation} a decision held for confirmation,
# {decision} a decision (each filled in with an id that does not exist as well).
CONSOLE_ROUTES: dict[tuple[str, str], str] = {
    ("/console/cases/<review_id>", "GET"): "/console/cases/{review}",
    **{(f"/console/cases/<review_id>/{action}", "POST"): f"/console/cases/{{review}}/{action}"
       for action in ("claim", "renew", "release", "rescore", "resolve", "extend")},
    ("/console/confirmations/<review_id>", "GET"): "/console/confirmations/{confirmation}",
    **{(f"/console/confirmations/<review_id>/{action}", "POST"): f"/console/confirmations/{{confirmation}}/{action}"
       for action in ("claim", "renew", "release", "confirm")},
}
AUDIT_ROUTES: dict[tuple[str, str], str] = {("/audit/decisions/<decision_id>", "GET"): "/audit/decisions/{decision}"}
# Officials' and signed-in people's pages without an id: who may open them.
SIGNED_IN_PAGES: dict[tuple[str, str], str] = {
    ("/console", "GET"): "reviewer", ("/console/next", "POST"): "reviewer",
    ("/console/confirmations", "GET"): "reviewer", ("/console/confirmations/next", "POST"): "reviewer",
    ("/audit", "GET"): "auditor", ("/audit/export.csv", "GET"): "auditor", ("/audit/export.parquet", "GET"): "auditor",
    ("/audit/report", "GET"): "auditor", ("/audit/report.json", "GET"): "auditor", ("/audit/report.csv", "GET"): "auditor",
    ("/me", "GET"): "person", ("/me/data.json", "GET"): "person",
}
PAGE_QUERIES = {path: "?model=german-credit&from=2026-01-01&to=2026-01-31"
                for path in ("/audit/report", "/audit/report.json", "/audit/report.csv")}
STATIC_FILES = {"/static/<path:filename>", "/docs/static/<path:filename>", "/docs/swagger/<path:filename>"}


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> IdentityProvider:
    return IdentityProvider.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture
def gateway_extra(idp: IdentityProvider) -> dict[str, Any]:
    return idp.config()


@dataclass
class Caller:
    name: str
    kind: str
    headers: dict[str, str]


@dataclass
class World:
    gw: Gateway
    callers: list[Caller]
    decisions: dict[str, str]  # label -> id
    reviews: dict[str, str]  # label -> id
    sees: dict[str, set[str]]  # caller -> decision ids (reviewer's grows as reviews are requested)
    review_of: dict[str, str]  # review id -> decision id


def decide(gw: Gateway, iin: str, who: str) -> dict[str, Any]:
    body = copy.deepcopy(gw.sample)
    body["subject"]["iin"] = iin
    resp = gw.decide(body, who=who)
    assert resp.status_code == 201, resp.get_json()
    created: dict[str, Any] = resp.get_json()
    return created


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def build_world(gw: Gateway, idp: IdentityProvider) -> World:
    made = {
        "D1": decide(gw, IIN_1, "agency_a"),  # citizen 1's capability link names this one
        "D2": decide(gw, IIN_2, "agency_b"),  # citizen 2's
        "D3": decide(gw, IIN_3, "agency_b"),  # the OIDC citizen's, at agency B
        "D4": decide(gw, IIN_3, "agency_a"),  # the OIDC citizen's, at agency A
        "D5": decide(gw, IIN_1, "agency_a"),  # citizen 1 again, but not the decision of their link
    }
    ids = {label: d["decision_id"] for label, d in made.items()}
    # The person's link reaches them through the notice only (issue 11, finding 2): not from the agency's answer.
    token = {label: notice_token(gw, d["decision_id"]) for label, d in made.items()}
    oidc = bearer(idp.token(IIN_3, exp=int(dt.datetime.now(dt.UTC).timestamp()) + 3600))
    callers = [  # staff first: the reviewer's view grows when citizens and agencies request reviews
        Caller("reviewer", "reviewer", gw.auth("reviewer")),
        Caller("auditor", "auditor", gw.auth("auditor")),
        Caller("admin", "admin", gw.auth("admin")),
        Caller("agency_b", "agency", gw.auth("agency_b")),
        Caller("citizen_2", "citizen", bearer(token["D2"])),
        Caller("citizen_oidc", "citizen", oidc),
        Caller("agency_a", "agency", gw.auth("agency_a")),
        Caller("citizen_1", "citizen", bearer(token["D1"])),
    ]
    reviews = {}
    for label, who in (("R2", bearer(token["D2"])), ("R3", oidc)):  # requested by the people themselves
        resp = gw.client.post(f"/v1/decisions/{ids['D' + label[1]]}/reviews", json=REVIEW_REQUEST, headers=who)
        assert resp.status_code == 201, resp.get_json()
        reviews[label] = resp.get_json()["review_id"]
    sees = {
        "agency_a": {ids["D1"], ids["D4"], ids["D5"]},
        "agency_b": {ids["D2"], ids["D3"]},
        "citizen_1": {ids["D1"]},
        "citizen_2": {ids["D2"]},
        "citizen_oidc": {ids["D3"], ids["D4"]},
        "reviewer": {ids["D2"], ids["D3"]},
        "auditor": set(ids.values()),
        "admin": set(),
    }
    return World(gw, callers, ids, reviews, sees, {reviews["R2"]: ids["D2"], reviews["R3"]: ids["D3"]})


def body_for(rule: str, method: str, gw: Gateway) -> dict[str, Any]:
    """A valid request for the route, so that access is the only reason to refuse it."""
    if rule.endswith("/reviews") and method == "POST":
        return {"json": REVIEW_REQUEST}
    action = rule.rsplit("/", 1)[-1]
    if action in ("renew", "release", "rescore"):
        return {"json": {"fencing_token": 1}}
    if action == "resolve":
        return {"json": {"fencing_token": 1, "outcome": "upheld", "reasons": {"kk": "Шешім дұрыс."},
                         "point_of_view_considered": True}}
    if action == "confirm":
        return {"json": {"fencing_token": 1, "outcome": "confirmed"}}
    if action == "ground-truth":
        return {"json": {"positive": True}}
    if action == "status":
        return {"json": {"status": "reported"}}
    if action == "extend":
        until = (dt.date.today() + dt.timedelta(days=40)).isoformat()
        return {"json": {"fencing_token": 1, "until": until, "reason": "Expert opinion requested"}}
    if action == "decisions":
        return {"json": gw.sample}
    if action == "suspend":
        return {"json": {"reason": "matrix", "incident_id": open_incident(gw.client, gw.auth("admin"))}}
    if action == "hold":  # a legal hold: set with a JSON reason, cleared with ?reason=
        return {"json": {"reason": "matrix"}} if method == "POST" else {"query_string": {"reason": "matrix"}}
    return {}


def send(gw: Gateway, method: str, url: str, headers: dict[str, str], extra: dict[str, Any]) -> Any:
    return gw.client.open(url, method=method, headers=headers, **extra)


def fingerprint(resp: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    return resp.status_code, resp.data, sorted((k, v) for k, v in resp.headers.items() if k.lower() != "date")


def classify_routes(gw: Gateway) -> list[tuple[str, str, str]]:
    """Every (rule, method) with a path parameter, with its class; fails on any route nobody classified."""
    found, unclassified = [], []
    for rule in gw.app.url_map.iter_rules():
        if not rule.arguments:
            continue
        plain = re.sub(r"<(?:[^<>:]+:)?([^<>:]+)>", r"<\1>", rule.rule)  # without converters
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            key = (plain, method)
            if key in DECISION_ROUTES:
                found.append((plain, method, "decision"))
            elif key in REVIEW_ROUTES:
                found.append((plain, method, "review"))
            elif key in PUBLIC_OBJECT_ROUTES:
                found.append((plain, method, "public"))
            elif key in PAGE_ROUTES:
                found.append((plain, method, "page"))
            elif key in BATCH_ROUTES:
                found.append((plain, method, "batch"))
            elif key in CONSOLE_ROUTES:
                found.append((plain, method, "console"))
            elif key in AUDIT_ROUTES:
                found.append((plain, method, "audit"))
            elif key in PUBLIC_PAGES or rule.rule in STATIC_FILES and method == "GET" or key in NESTED_ROUTES:
                continue
            else:
                unclassified.append(key)
    assert not unclassified, f"routes with an id that the access matrix does not classify: {unclassified}"
    return found


def test_no_principal_reaches_an_object_it_may_not_see(gateway: Gateway, idp: IdentityProvider) -> None:
    world = build_world(gateway, idp)
    routes = classify_routes(gateway)
    assert {(r, m) for r, m, c in routes if c in ("decision", "review")} == set(DECISION_ROUTES) | set(REVIEW_ROUTES)
    assert {(r, m) for r, m, c in routes if c == "page"} == set(PAGE_ROUTES)
    assert {(r, m) for r, m, c in routes if c == "console"} == set(CONSOLE_ROUTES)
    assert {(r, m) for r, m, c in routes if c == "audit"} == set(AUDIT_ROUTES)
    # Pages: test_no_session_reaches_a_page_it_may_not_see and test_officials_and_people_reach_only_their_own_pages;
    # batches: test_a_batch_is_seen_by_its_agency_only
    routes = [r for r in routes if r[2] not in ("page", "console", "audit", "batch")]
    failures: list[str] = []
    tally: Counter[str] = Counter()
    cross_successes = 0

    for who in world.callers:
        for rule, method, kind in routes:
            extra = body_for(rule, method, gateway)
            if kind == "public":
                allowed = PUBLIC_OBJECT_ROUTES[(rule, method)]
                if allowed is None or who.kind in allowed:
                    continue  # public reads and the permitted role's own actions are tested elsewhere
                name = "german-credit"
                if "<sha256>" in rule:
                    data = b"matrix"
                    real, fake = hashlib.sha256(data).hexdigest(), "0" * 64
                    extra = {"data": data, "content_type": "application/octet-stream"}
                elif "<incident_id>" in rule:
                    real, fake = open_incident(gateway.client, gateway.auth("admin")), "inc_AAAAAAAAAAAAAAAAAAAAAA"
                else:
                    real, fake = name, "no-such-model"
                param = next(p for p in ("<sha256>", "<incident_id>", "<name>") if p in rule)
                hit = send(gateway, method, rule.replace(param, real), who.headers, extra)
                miss = send(gateway, method, rule.replace(param, fake), who.headers, extra)
                tally[f"public {hit.status_code}"] += 1
                if hit.status_code < 400 or fingerprint(hit) != fingerprint(miss):
                    failures.append(f"{who.name} {method} {rule}: {hit.status_code} vs {miss.status_code} for a missing one")
                continue

            table = DECISION_ROUTES if kind == "decision" else REVIEW_ROUTES
            objects = (list(world.decisions.values()) if kind == "decision" else list(world.reviews.values()))
            param = "<decision_id>" if kind == "decision" else "<review_id>"
            missing = MISSING_DECISION if kind == "decision" else MISSING_REVIEW
            for obj in objects:
                decision = obj if kind == "decision" else world.review_of[obj]
                sees = decision in world.sees[who.name]
                may = sees and who.kind in table[(rule, method)]
                url = rule.replace(param, obj).replace("<decision_id>", decision)
                resp = send(gateway, method, url, who.headers, extra)
                label = f"{who.name} {method} {url}"
                if not sees:
                    absent = send(gateway, method, rule.replace(param, missing).replace("<decision_id>", decision),
                                  who.headers, extra)
                    tally["hidden 404"] += 1
                    if resp.status_code != 404 or fingerprint(resp) != fingerprint(absent):
                        failures.append(f"{label}: {resp.status_code} {resp.data[:120]!r}, not the 404 of a missing id")
                elif not may:
                    tally["seen 403"] += 1
                    if resp.status_code != 403:
                        failures.append(f"{label}: {resp.status_code}, expected 403")
                else:
                    tally[f"allowed {resp.status_code}"] += 1
                    if resp.status_code in (401, 403, 404) or resp.status_code >= 500:
                        failures.append(f"{label}: {resp.status_code} {resp.data[:200]!r} for an allowed caller")
                if resp.status_code < 300 and not may:
                    cross_successes += 1
                if rule.endswith("/reviews") and method == "POST" and resp.status_code == 201:
                    world.sees["reviewer"].add(decision)  # a review makes the decision the reviewers' business
                    world.review_of[resp.get_json()["review_id"]] = decision

    print(dict(sorted(tally.items())))
    assert cross_successes == 0
    assert not failures, "\n".join(failures)
    # The matrix covered every kind of cell, and every caller.
    assert tally["hidden 404"] > 100 and tally["seen 403"] > 20 and sum(v for k, v in tally.items() if k.startswith("allowed")) > 50


def test_a_batch_is_seen_by_its_agency_only(gateway: Gateway, idp: IdentityProvider) -> None:
    world = build_world(gateway, idp)
    assert {(r, m) for r, m, c in classify_routes(gateway) if c == "batch"} == set(BATCH_ROUTES)
    row = {"idempotency_key": "bola-batch", **copy.deepcopy(gateway.sample)}
    made = gateway.client.post("/v1/models/german-credit/decision-batches", json={"rows": [row]},
                               headers=gateway.auth("agency_a"))
    assert made.status_code == 202, made.get_json()
    batch_id = made.get_json()["batch_id"]
    for who in world.callers:
        for rule, method in BATCH_ROUTES:
            url = rule.replace("<name>", "german-credit")
            hit = send(gateway, method, url.replace("<batch_id>", batch_id), who.headers, {})
            miss = send(gateway, method, url.replace("<batch_id>", MISSING_BATCH), who.headers, {})
            if who.name == "agency_a":
                assert hit.status_code == 200, (who.name, rule)
            else:
                assert hit.status_code == 404 and fingerprint(hit) == fingerprint(miss), (who.name, rule, hit.status_code)
        # The list of batches: the agency that made it sees it; another agency sees an empty list; others 403.
        listed = send(gateway, "GET", "/v1/models/german-credit/decision-batches", who.headers, {})
        if who.kind == "agency":
            ids = [b["batch_id"] for b in listed.get_json()["batches"]]
            assert listed.status_code == 200 and ids == ([batch_id] if who.name == "agency_a" else []), who.name
        else:
            assert listed.status_code in (401, 403), (who.name, listed.status_code)


def test_the_matrix_covers_at_least_seven_kinds_of_principal(gateway: Gateway, idp: IdentityProvider) -> None:
    world = build_world(gateway, idp)
    assert len({c.name for c in world.callers}) >= 7
    assert Counter(c.kind for c in world.callers) == {"agency": 2, "citizen": 3, "reviewer": 1, "auditor": 1, "admin": 1}


def test_a_capability_link_opens_its_decision_only(gateway: Gateway, idp: IdentityProvider) -> None:
    world = build_world(gateway, idp)
    link = next(c for c in world.callers if c.name == "citizen_1").headers
    same_person_other_decision = gateway.client.get(f"/v1/decisions/{world.decisions['D5']}", headers=link)
    missing = gateway.client.get(f"/v1/decisions/{MISSING_DECISION}", headers=link)
    assert same_person_other_decision.status_code == 404 and same_person_other_decision.data == missing.data
    assert gateway.client.get(f"/v1/decisions/{world.decisions['D1']}", headers=link).status_code == 200
    # A capability link never lists: that needs the identity provider.
    listing = gateway.client.get("/v1/me/decisions", headers=link)
    assert listing.status_code == 403 and listing.get_json()["error"]["code"] == "oidc_required"


def test_the_oidc_citizen_lists_their_decisions_at_every_agency_and_nothing_else(gateway: Gateway, idp: IdentityProvider) -> None:
    world = build_world(gateway, idp)
    oidc = next(c for c in world.callers if c.name == "citizen_oidc").headers
    listing = gateway.client.get("/v1/me/decisions", headers=oidc)
    assert listing.status_code == 200
    body = listing.get_json()
    assert {d["decision_id"] for d in body["decisions"]} == {world.decisions["D3"], world.decisions["D4"]}
    assert body["total"] == 2 and body["limit"] == 50 and body["offset"] == 0
    assert all("citizen" not in d["links"] for d in body["decisions"])  # they hold a better credential already
    page = gateway.client.get("/v1/me/decisions?limit=1&offset=1", headers=oidc).get_json()
    assert len(page["decisions"]) == 1 and page["total"] == 2
    assert gateway.client.get("/v1/me/decisions?limit=101", headers=oidc).status_code == 422
    for who in ("agency_a", "auditor", "admin"):
        assert gateway.client.get("/v1/me/decisions", headers=gateway.auth(who)).status_code == 403


def test_staff_never_receive_the_persons_capability_link(gateway: Gateway, idp: IdentityProvider) -> None:
    world = build_world(gateway, idp)
    did = world.decisions["D2"]  # under review: agency B, the reviewer, the auditor and citizen 2 all read it
    for who in world.callers:
        resp = gateway.client.get(f"/v1/decisions/{did}", headers=who.headers)
        if resp.status_code != 200:
            continue
        links = resp.get_json()["links"]
        if who.kind in ("reviewer", "auditor", "agency"):
            # Holding it, they could act as the person; the agency too (issue 11, finding 2).
            assert links.get("citizen") is None, who.name
        else:
            assert links["citizen"].startswith(f"https://gateway.test/d/{did}?token=gwc_"), who.name


def test_an_agency_sees_what_any_key_of_its_body_made(gateway: Gateway) -> None:
    """Key rotation: a new key of the same body keeps access; a revoked key loses it at once."""
    from gateway.auth import create_key, revoke_key
    from gateway.db import write_transaction

    did = gateway.decide(who="agency_a").get_json()["decision_id"]
    with gateway.app.app_context(), write_transaction():
        _, new_key = create_key(name="agency-a-2027", role="agency", body="Agency A")
        _, other_key = create_key(name="agency-c", role="agency", body="Agency C")
        revoke_key("agency_a")
    assert gateway.client.get(f"/v1/decisions/{did}", headers=bearer(new_key)).status_code == 200
    assert gateway.client.get(f"/v1/decisions/{did}", headers=bearer(other_key)).status_code == 404
    assert gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).status_code == 401


def test_path_parameter_values_that_are_not_ids_are_404(gateway: Gateway, idp: IdentityProvider, tmp_path: Path) -> None:
    world = build_world(gateway, idp)
    for who in world.callers:
        for bad in ("..%2F..%2Fetc", "%00", "a" * 65, "dec_%27%20OR%201%3D1"):
            resp = gateway.client.get(f"/v1/decisions/{bad}", headers=who.headers)
            assert resp.status_code == 404, (who.name, bad, resp.status_code)


def _page_browser(gw: Gateway, link: str | None = None, held: dict[str, str] | None = None) -> Any:
    """A browser: signed in by following a personal link, or holding the given tokens in its session."""
    browser = gw.app.test_client()
    if link is not None:
        assert browser.get(link.split("https://gateway.test", 1)[1]).status_code == 303
    if held:
        with browser.session_transaction() as session:  # the app's own signed session, as a browser would hold it
            session["caps"] = {d: {"t": t, "l": "kk"} for d, t in held.items()}
    return browser


def _csrf(browser: Any, decision_id: str) -> str | None:
    page = browser.get(f"/d/{decision_id}/review")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    return found.group(1) if found else None


def test_no_session_reaches_a_page_it_may_not_see(gateway: Gateway, idp: IdentityProvider) -> None:
    """Every page of a decision × another person's session, another decision's link, an expired link and no
    session: the 404 of a decision that does not exist, the same bytes apart from the id in the address."""
    world = build_world(gateway, idp)
    target = world.decisions["D1"]
    citizen_link = {label: decide_link(gateway, world, label) for label in ("D1", "D2", "D5")}
    browsers = {
        "another person's session": _page_browser(gateway, citizen_link["D2"]),
        "another decision's link (same person)": _page_browser(gateway, citizen_link["D5"]),
        "an expired link in the session": _page_browser(gateway, held={target: expired_token(gateway, target, 400)}),
        "no session": gateway.app.test_client(),
    }
    own = _page_browser(gateway, citizen_link["D1"])
    failures = []
    for label, browser in browsers.items():
        own_decision = {"another person's session": world.decisions["D2"],
                        "another decision's link (same person)": world.decisions["D5"]}.get(label)
        token = _csrf(browser, own_decision) if own_decision else None
        for (rule, method), suffix in PAGE_ROUTES.items():
            data = {"csrf_token": token, "point_of_view": "x", "contest_grounds": "other", "language": "kk",
                    "review_id": world.reviews["R2"]} if method == "POST" else None
            data = {k: v for k, v in (data or {}).items() if v is not None} or None
            hit = browser.open(f"/d/{target}{suffix}", method=method, data=data)
            miss = browser.open(f"/d/{MISSING_DECISION}{suffix}", method=method, data=data)
            same = hit.data.replace(target.encode(), b"ID") == miss.data.replace(MISSING_DECISION.encode(), b"ID")
            if hit.status_code != 404 or miss.status_code != 404 or not same:
                failures.append(f"{label}: {method} {rule}: {hit.status_code} (missing: {miss.status_code}, same body: {same})")
    assert not failures, "\n".join(failures)
    # The person's own session opens every page of their decision (the matrix is not vacuous).
    for suffix in ("", "/explanation", "/review", "/data.json"):
        assert own.get(f"/d/{target}{suffix}").status_code == 200, suffix
    assert gateway.count("reviews") == 2  # no page request of another session recorded anything


def decide_link(gw: Gateway, world: World, label: str) -> str:
    """The person's capability link for a decision of the world, as their notice carries it."""
    did = world.decisions[label]
    return f"https://gateway.test/d/{did}?token={notice_token(gw, did)}"


# --- the officials' console, the audit pages and /me: every route × every kind of browser session -------------

def _held_decision(gw: Gateway, german_manifest: Path) -> str:
    """A decision of a low-autonomy version, held for an officer's confirmation: its confirmation case id."""
    register_low_autonomy(gw, german_manifest)
    made = gw.decide()
    assert made.status_code == 201 and made.get_json()["confirmation"] == "pending_confirmation", made.get_json()
    listed = gw.client.get("/v1/confirmations", headers=gw.auth("reviewer")).get_json()
    return str(listed["reviews"][0]["review_id"])


def _official_browser(gw: Gateway, name: str) -> Any:
    from tests.web.console_support import official

    return official(gw, name)


def _person_browser(gw: Gateway, iin: str) -> Any:
    """A browser with a person's OIDC session (as the identity provider's sign-in starts it)."""
    from gateway import officials
    from gateway.identity import subject_ref

    browser = gw.app.test_client()
    with gw.app.app_context():
        ref = subject_ref(iin, gw.app.extensions["gateway.settings"].subject_key)
        started = officials.sign_in_person(ref)
    with browser.session_transaction() as session:
        session["sid"] = started.session_id
    return browser


def _any_csrf(browser: Any) -> str | None:
    for path in ("/console", "/audit", "/me", "/signin"):
        page = browser.get(path)
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
        if page.status_code == 200 and found:
            return found.group(1)
    return None


def test_officials_and_people_reach_only_their_own_pages(gateway: Gateway, idp: IdentityProvider,
                                                         german_manifest: Path) -> None:
    """Reviewer, auditor, OIDC person, capability-link person and no session × every console, audit and /me
    route: the role's own pages open, another role's are 403, no official/person session is 401, and an id
    that does not exist is the same 404 whoever asks."""
    world = build_world(gateway, idp)
    review, decision = world.reviews["R2"], world.decisions["D2"]
    confirmation = _held_decision(gateway, german_manifest)
    browsers = {
        "reviewer": _official_browser(gateway, "reviewer"),
        "auditor": _official_browser(gateway, "auditor"),
        "person": _person_browser(gateway, IIN_3),
        "capability": _page_browser(gateway, decide_link(gateway, world, "D1")),
        "nobody": gateway.app.test_client(),
    }
    kinds = {"reviewer": "reviewer", "auditor": "auditor", "person": "person"}
    failures = []
    for who, browser in browsers.items():
        token = _any_csrf(browser) or "none"
        for routes, role in ((CONSOLE_ROUTES, "reviewer"), (AUDIT_ROUTES, "auditor")):
            for (rule, method), path in routes.items():
                target = path.format(review=review, confirmation=confirmation, decision=decision)
                missing = path.format(review=MISSING_REVIEW, confirmation=MISSING_REVIEW, decision=MISSING_DECISION)
                data = {"csrf_token": token, "fencing_token": "0"} if method == "POST" else None
                hit = browser.open(target, method=method, data=data)
                expected = (401 if kinds.get(who) not in ("reviewer", "auditor") else
                            (None if kinds[who] == role else 403))
                if expected is None:
                    if hit.status_code in (401, 403, 404) or hit.status_code >= 500:
                        failures.append(f"{who}: {method} {rule}: {hit.status_code} (should be allowed)")
                    gone = browser.open(missing, method=method, data=data)
                    if gone.status_code != 404:
                        failures.append(f"{who}: {method} {rule} (missing id): {gone.status_code}")
                elif hit.status_code != expected:
                    failures.append(f"{who}: {method} {rule}: {hit.status_code}, expected {expected}")
        for (rule, method), role in SIGNED_IN_PAGES.items():
            data = {"csrf_token": token} if method == "POST" else None
            resp = browser.open(rule + PAGE_QUERIES.get(rule, ""), method=method, data=data)
            resp.get_data()  # an export streams: read it to the end, as a browser would
            resp.close()
            if kinds.get(who) == role:
                expected_ok = resp.status_code in (200, 303)
            elif role == "person" or kinds.get(who) not in ("reviewer", "auditor"):
                expected_ok = resp.status_code == 401
            else:
                expected_ok = resp.status_code == 403
            if not expected_ok:
                failures.append(f"{who}: {method} {rule}: {resp.status_code} (page of the {role})")
    assert not failures, "\n".join(failures)
    # An auditor cannot resolve, nor confirm: the cases are as they were (the held decision is still held).
    assert gateway.count("reviews") == 3
    with gateway.app.app_context():
        held = db.session.execute(text("SELECT status, outcome FROM reviews WHERE id = :r"), {"r": confirmation}).one()
    assert held.outcome is None and held.status in ("queued", "claimed")
