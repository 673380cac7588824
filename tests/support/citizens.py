"""A stand-in national identity provider (RSA and EC keys, a JWKS file) and valid IINs for tests."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.identity import iin_check_digit

ISSUER = "https://idp.test/realms/egov"
AUDIENCE = "decision-rights-gateway"


def valid_iin(first11: str) -> str:
    """Complete 11 digits (YYMMDD, century digit, serial) into a valid IIN."""
    digit = iin_check_digit(first11)
    if digit is None:
        raise ValueError(f"{first11} has no valid check digit; pick another serial")
    return first11 + str(digit)


@dataclass
class IdentityProvider:
    """Signs ID tokens with its keys and publishes them as a JWKS file, as the gateway's config reads it."""

    folder: Path
    rsa_key: Any
    ec_key: Any
    rsa_kid: str = "rsa-2026"
    ec_kid: str = "ec-2026"

    @classmethod
    def create(cls, folder: Path) -> IdentityProvider:
        idp = cls(folder, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                  ec.generate_private_key(ec.SECP256R1()))
        idp.publish()
        return idp

    @property
    def jwks_path(self) -> Path:
        return self.folder / "jwks.json"

    def jwk(self, key: Any, kid: str, alg: str) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
        data: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
        return data | {"kid": kid, "use": "sig", "alg": alg}

    def publish(self, extra: list[dict[str, Any]] | None = None) -> None:
        keys = [self.jwk(self.rsa_key, self.rsa_kid, "RS256"), self.jwk(self.ec_key, self.ec_kid, "ES256"), *(extra or [])]
        self.jwks_path.write_text(json.dumps({"keys": keys}))

    def config(self) -> dict[str, Any]:
        return {"OIDC_ISSUER": ISSUER, "OIDC_AUDIENCE": AUDIENCE, "OIDC_JWKS_FILE": str(self.jwks_path)}

    def claims(self, person: str, **changes: Any) -> dict[str, Any]:
        """Claims of an ID token for the person with IIN `person`; `changes` override (None: leave out)."""
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "person-" + person[-4:], "iat": now, "exp": now + 300,
                  "iin": person}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, person: str, *, alg: str = "RS256", kid: str | None = None, key: Any = None,
              headers: dict[str, Any] | None = None, **changes: Any) -> str:
        """An ID token for the person with IIN `person`; claims set to None are left out."""
        if key is None:
            key = self.rsa_key if alg.startswith("RS") else self.ec_key
        if kid is None:
            kid = self.rsa_kid if alg.startswith("RS") else self.ec_kid
        return jwt.encode(self.claims(person, **changes), key, algorithm=alg, headers={"kid": kid, **(headers or {})})


def notice_token(gw: Any, decision_id: str) -> str:
    """The capability token of the person's link, as their notice carries it (agency responses never do)."""
    import sqlalchemy as sa

    from gateway.auth import capability_token
    from gateway.extensions import db

    with gw.app.app_context():
        ref = db.session.execute(sa.text("SELECT subject_ref FROM decisions WHERE id = :d"), {"d": decision_id}).scalar_one()
        return capability_token(decision_id, ref)
