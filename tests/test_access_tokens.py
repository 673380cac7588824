"""Credentials, attacked: capability links, OIDC tokens and API keys that must all be refused.

Every refusal is a 401 with the same error shape and no hint of whether the decision exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from gateway import create_app
from gateway.auth import CAPABILITY_SALT
from gateway.cli import main
from gateway.extensions import db
from tests.conftest import SECRETS, Gateway, make_config
from tests.support.citizens import IdentityProvider, notice_token

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
IIN = "921029350851"  # the sample request's subject


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> IdentityProvider:
    return IdentityProvider.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture
def gateway_extra(idp: IdentityProvider) -> dict[str, Any]:
    idp.publish()  # tests may have published other keys
    return idp.config()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def decided(gw: Gateway) -> tuple[str, str]:
    body = gw.decide().get_json()
    # The person's link, as their notice carries it (agency answers never do: issue 11, finding 2).
    return body["decision_id"], notice_token(gw, body["decision_id"])


def refused(gw: Gateway, url: str, headers: dict[str, str]) -> dict[str, Any]:
    resp = gw.client.get(url, headers=headers)
    assert resp.status_code == 401, (resp.status_code, resp.data[:300])
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    error: dict[str, Any] = resp.get_json()["error"]
    assert error["code"] in ("unauthorized", "token_expired")
    return error


# --- capability links -------------------------------------------------------------------------------------

def test_the_capability_link_lets_the_person_read_ask_for_review_and_see_the_access_log(gateway: Gateway) -> None:
    did, token = decided(gateway)
    who = bearer(token)
    assert gateway.client.get(f"/v1/decisions/{did}", headers=who).status_code == 200
    assert gateway.client.get(f"/v1/decisions/{did}/explanation", headers=who).status_code == 200
    assert gateway.client.get(f"/v1/decisions/{did}/explanation.svg", headers=who).status_code == 200
    review = gateway.client.post(f"/v1/decisions/{did}/reviews", headers=who,
                                 json={"point_of_view": "Табысым жоғары.", "contest_grounds": ["wrong_data"]})
    assert review.status_code == 201
    assert gateway.client.get(review.headers["Location"], headers=who).status_code == 200
    log = gateway.client.get(f"/v1/decisions/{did}/access-log", headers=who).get_json()
    assert [e["what"] for e in log["events"]] == ["decision", "explanation", "explanation.svg", "review"]
    assert {e["principal"]["kind"] for e in log["events"]} == {"citizen"}


def test_a_forged_or_tampered_capability_token_is_refused(gateway: Gateway) -> None:
    did, token = decided(gateway)
    url = f"/v1/decisions/{did}"
    payload, stamp, signature = token.removeprefix("gwc_").split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    refused(gateway, url, bearer(f"gwc_{payload}.{stamp}.{flipped}"))
    other_decision = base64.urlsafe_b64encode(json.dumps({"d": "dec_other", "s": "x"}).encode()).decode().rstrip("=")
    refused(gateway, url, bearer(f"gwc_{other_decision}.{stamp}.{signature}"))
    refused(gateway, url, bearer("gwc_"))
    refused(gateway, url, bearer("gwc_not.a.token"))
    # Signed with another deployment's secret.
    foreign = URLSafeTimedSerializer("d4" * 32, salt=CAPABILITY_SALT).dumps(json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    refused(gateway, url, bearer(f"gwc_{foreign}"))


def test_a_capability_token_names_its_decision_and_its_subject(gateway: Gateway) -> None:
    """Re-signing a valid payload for another decision is impossible without the key; with it, the subject binding still holds."""
    _, token = decided(gateway)
    other = gateway.decide(json.loads(json.dumps(gateway.sample).replace(IIN, "061211600012"))).get_json()["decision_id"]
    payload = token.removeprefix("gwc_").split(".")[0]
    binding = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["s"]
    # Even a token correctly signed for `other` but carrying the first person's subject binding is refused.
    forged = URLSafeTimedSerializer(SECRETS["SECRET_KEY"], salt=CAPABILITY_SALT).dumps({"d": other, "s": binding})
    refused(gateway, f"/v1/decisions/{other}", bearer(f"gwc_{forged}"))
    # The link for one decision is a 404 on another (the same 404 as for no decision).
    resp = gateway.client.get(f"/v1/decisions/{other}", headers=bearer(token))
    missing = gateway.client.get("/v1/decisions/dec_AAAAAAAAAAAAAAAAAAAAAA", headers=bearer(token))
    assert resp.status_code == 404 and resp.data == missing.data


def _sign_at(secret: str, payload: dict[str, Any], at: float) -> str:
    class Then(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(at)

    return "gwc_" + URLSafeTimedSerializer(secret, salt=CAPABILITY_SALT, signer=Then).dumps(payload)


def _payload(token: str) -> dict[str, Any]:
    part = token.removeprefix("gwc_").split(".")[0]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


@pytest.mark.gateway_config(CAPABILITY_MAX_AGE_DAYS=30)
def test_an_expired_capability_token_is_refused(gateway: Gateway) -> None:
    did, token = decided(gateway)
    payload = _payload(token)
    fresh = _sign_at(SECRETS["SECRET_KEY"], payload, time.time() - 29 * 86400)
    assert gateway.client.get(f"/v1/decisions/{did}", headers=bearer(fresh)).status_code == 200
    stale = _sign_at(SECRETS["SECRET_KEY"], payload, time.time() - 31 * 86400)
    assert refused(gateway, f"/v1/decisions/{did}", bearer(stale))["code"] == "token_expired"


def test_the_default_lifetime_is_one_year(gateway: Gateway) -> None:
    did, token = decided(gateway)
    payload = _payload(token)
    assert gateway.app.config["CAPABILITY_MAX_AGE_DAYS"] == 365
    within = _sign_at(SECRETS["SECRET_KEY"], payload, time.time() - 364 * 86400)
    assert gateway.client.get(f"/v1/decisions/{did}", headers=bearer(within)).status_code == 200
    refused(gateway, f"/v1/decisions/{did}", bearer(_sign_at(SECRETS["SECRET_KEY"], payload, time.time() - 366 * 86400)))


@pytest.mark.gateway_config(SECRET_KEY="e5" * 32, SECRET_KEY_FALLBACKS=[SECRETS["SECRET_KEY"]])
def test_links_signed_before_a_key_rotation_keep_working(gateway: Gateway) -> None:
    did, token = decided(gateway)
    old = "gwc_" + URLSafeTimedSerializer(SECRETS["SECRET_KEY"], salt=CAPABILITY_SALT).dumps(_payload(token))
    assert gateway.client.get(f"/v1/decisions/{did}", headers=bearer(old)).status_code == 200
    assert gateway.client.get(f"/v1/decisions/{did}", headers=bearer(token)).status_code == 200
    retired = "gwc_" + URLSafeTimedSerializer("f6" * 32, salt=CAPABILITY_SALT).dumps(_payload(token))
    refused(gateway, f"/v1/decisions/{did}", bearer(retired))


def test_the_token_is_accepted_only_as_a_bearer_header_on_the_api(gateway: Gateway) -> None:
    did, token = decided(gateway)
    refused(gateway, f"/v1/decisions/{did}?token={token}", {})
    refused(gateway, f"/v1/decisions/{did}", {"Authorization": f"Basic {token}"})
    refused(gateway, f"/v1/decisions/{did}", {"Cookie": f"token={token}"})


# --- OIDC bearer tokens --------------------------------------------------------------------------------------

def test_a_valid_id_token_lists_the_persons_decisions(gateway: Gateway, idp: IdentityProvider) -> None:
    did, _ = decided(gateway)
    for alg in ("RS256", "ES256"):
        resp = gateway.client.get("/v1/me/decisions", headers=bearer(idp.token(IIN, alg=alg)))
        assert resp.status_code == 200, resp.get_json()
        assert [d["decision_id"] for d in resp.get_json()["decisions"]] == [did]
    assert gateway.client.get(f"/v1/decisions/{did}/explanation", headers=bearer(idp.token(IIN))).status_code == 200


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part(header)}.{part(claims)}."


def test_forged_id_tokens_are_refused(gateway: Gateway, idp: IdentityProvider) -> None:
    decided(gateway)
    url = "/v1/me/decisions"
    now = int(time.time())
    claims = idp.claims(IIN)
    # alg "none", with and without a kid.
    refused(gateway, url, bearer(_unsigned(claims, {"alg": "none", "typ": "JWT", "kid": idp.rsa_kid})))
    refused(gateway, url, bearer(_unsigned(claims, {"alg": "none"})))
    # HS/RS confusion: HMAC-signed with the provider's public key as the secret.
    public_pem = idp.rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": idp.rsa_kid}
    signing_input = _unsigned(claims, header)[:-1].encode()
    mac = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input, hashlib.sha256).digest()).decode().rstrip("=")
    refused(gateway, url, bearer(f"{signing_input.decode()}.{mac}"))
    # Signed by a key the provider does not publish, under a kid it does publish, and under an unknown kid.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(gateway, url, bearer(idp.token(IIN, key=stranger)))
    refused(gateway, url, bearer(idp.token(IIN, key=stranger, kid="rsa-2019")))
    refused(gateway, url, bearer(idp.token(IIN, kid="rsa-2019")))
    # RS256 header over an EC key's kid (algorithm/key mismatch).
    refused(gateway, url, bearer(idp.token(IIN, alg="RS256", kid=idp.ec_kid)))
    # Wrong issuer, wrong audience, expired beyond the 60 s leeway, issued without exp / iat / iss / aud.
    refused(gateway, url, bearer(idp.token(IIN, iss="https://evil.test/realms/egov")))
    refused(gateway, url, bearer(idp.token(IIN, aud="another-service")))
    assert refused(gateway, url, bearer(idp.token(IIN, iat=now - 600, exp=now - 61)))["code"] == "token_expired"
    for missing in ("exp", "iat", "iss", "aud"):
        refused(gateway, url, bearer(idp.token(IIN, **{missing: None})))
    # Not yet valid; no IIN, an invalid IIN, an IIN under another claim.
    refused(gateway, url, bearer(idp.token(IIN, nbf=now + 600)))
    refused(gateway, url, bearer(idp.token(IIN, iin=None)))
    refused(gateway, url, bearer(idp.token(IIN, iin="921029350852")))
    refused(gateway, url, bearer(idp.token(IIN, iin=None, national_id=IIN)))
    # A kid-less token, garbage, an empty bearer.
    refused(gateway, url, bearer(jwt.encode(claims, idp.rsa_key, algorithm="RS256")))
    refused(gateway, url, bearer("not-a-jwt"))
    refused(gateway, url, {"Authorization": "Bearer "})


def test_expiry_within_the_leeway_is_accepted(gateway: Gateway, idp: IdentityProvider) -> None:
    now = int(time.time())
    resp = gateway.client.get("/v1/me/decisions", headers=bearer(idp.token(IIN, iat=now - 600, exp=now - 30)))
    assert resp.status_code == 200


def test_symmetric_keys_in_the_jwks_are_never_used(gateway: Gateway, idp: IdentityProvider) -> None:
    secret = b"a shared secret that must not count" * 2
    oct_key = {"kty": "oct", "kid": "hmac-1", "alg": "HS256", "k": base64.urlsafe_b64encode(secret).decode().rstrip("=")}
    idp.publish(extra=[oct_key])
    token = jwt.encode(idp.claims(IIN), secret, algorithm="HS256", headers={"kid": "hmac-1"})
    refused(gateway, "/v1/me/decisions", bearer(token))


def test_a_rotated_jwks_file_is_read_again(gateway: Gateway, idp: IdentityProvider) -> None:
    assert gateway.client.get("/v1/me/decisions", headers=bearer(idp.token(IIN))).status_code == 200
    newer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = idp.token(IIN, key=newer, kid="rsa-2027")
    refused(gateway, "/v1/me/decisions", bearer(token))
    idp.publish(extra=[idp.jwk(newer, "rsa-2027", "RS256")])
    assert gateway.client.get("/v1/me/decisions", headers=bearer(token)).status_code == 200


def test_without_oidc_configured_every_jwt_is_refused(gateway: Gateway, idp: IdentityProvider, tmp_path: Any) -> None:
    app = create_app(make_config(gateway.app.config["DATABASE_URL"], tmp_path, KEYSTORE_URL=gateway.app.config["KEYSTORE_URL"]))
    resp = app.test_client().get("/v1/me/decisions", headers=bearer(idp.token(IIN)))
    assert resp.status_code == 401
    with app.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()


# --- API keys ----------------------------------------------------------------------------------------------

def test_unknown_malformed_and_revoked_keys_are_refused_at_once_by_every_worker(gateway: Gateway, tmp_path: Any) -> None:
    url = "/v1/reviews"
    refused(gateway, url, bearer("gwk_" + "A" * 43))
    refused(gateway, url, bearer(gateway.keys["reviewer"] + "x"))
    refused(gateway, url, {"Authorization": gateway.keys["reviewer"]})  # no scheme
    refused(gateway, url, {})
    # A second app on the same database stands for another worker or instance.
    other_app = create_app(make_config(gateway.app.config["DATABASE_URL"], tmp_path, KEYSTORE_URL=gateway.app.config["KEYSTORE_URL"]))
    other_worker = other_app.test_client()
    try:
        assert other_worker.get(url, headers=gateway.auth("reviewer")).status_code == 200
        result = gateway.app.test_cli_runner().invoke(main, args=["keys", "revoke", "reviewer"])
        assert result.exit_code == 0 and "revoked: reviewer" in result.output
        refused(gateway, url, gateway.auth("reviewer"))
        assert other_worker.get(url, headers=gateway.auth("reviewer")).status_code == 401
    finally:
        with other_app.app_context():
            for engine in db.engines.values():  # the main database and the key store
                engine.dispose()


def test_keys_cli_prints_the_key_once_and_stores_only_its_hash(gateway: Gateway) -> None:
    runner = gateway.app.test_cli_runner()
    created = runner.invoke(main, args=["keys", "create", "--role", "auditor", "--name", "audit-2", "--body", "Audit office"])
    assert created.exit_code == 0, created.output
    key = created.output.strip()
    assert key.startswith("gwk_") and len(key) > 40
    assert gateway.client.get("/v1/reviews", headers=bearer(key)).status_code == 200
    listing = runner.invoke(main, args=["keys", "list"])
    assert "audit-2\tauditor\tAudit office" in listing.output and key not in listing.output
    assert key[len("gwk_") + 6:] not in listing.output
    # Use every credential, then look for any of them in every table.
    did, capability = decided(gateway)
    gateway.client.get(f"/v1/decisions/{did}", headers=bearer(capability))
    with gateway.app.app_context():
        dumps = {table.name: "\n".join(repr(tuple(row)) for row in db.session.execute(sa.select(table)).all())
                 for table in db.metadata.sorted_tables}
    everything = "\n".join(dumps.values())
    for secret in [key, *gateway.keys.values(), IIN]:
        assert secret not in everything
    assert hashlib.sha256(key.encode()).hexdigest() in dumps["api_clients"]
    # The capability link is in no table: not even the agency's stored first response (issue 11, findings 2, 11).
    assert [name for name, text in dumps.items() if capability in text] == []


class _JwksServer:
    """The identity provider's JWKS over HTTP (a real server on a loopback port), counting fetches."""

    def __init__(self, idp: IdentityProvider) -> None:
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = idp.jwks_path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_jwks_url_is_fetched_once_and_unknown_kids_cannot_make_it_fetch_again(
        gateway: Gateway, idp: IdentityProvider, tmp_path: Any) -> None:
    served = _JwksServer(idp)
    config = {**idp.config(), "OIDC_JWKS_FILE": None, "OIDC_JWKS_URL": served.url}
    app = create_app(make_config(gateway.app.config["DATABASE_URL"], tmp_path, KEYSTORE_URL=gateway.app.config["KEYSTORE_URL"], **config))
    client = app.test_client()
    try:
        for _ in range(3):
            assert client.get("/v1/me/decisions", headers=bearer(idp.token(IIN))).status_code == 200
        for i in range(20):
            resp = client.get("/v1/me/decisions", headers=bearer(idp.token(IIN, kid=f"forged-{i}")))
            assert resp.status_code == 401
        assert served.fetches == 1
    finally:
        served.close()
        with app.app_context():
            for engine in db.engines.values():  # the main database and the key store
                engine.dispose()
