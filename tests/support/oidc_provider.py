"""A real OpenID provider for the sign-in tests, built with Authlib's server side, on a free local port.

Authorization code flow with PKCE (S256 required) and nonce, discovery metadata, a JWKS, RS256 ID tokens.
Whoever signs in is the provider's `next_user` (the tests choose them; there is no login form), and the
provider can be told to misbehave once (`tamper`): a wrong nonce or an expired ID token.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, request
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server


@dataclass
class _Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uri: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in ("openid", "profile"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class _Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: dict[str, Any]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class Provider:
    """The running provider: its issuer URL, its one client, and what it was asked."""

    def __init__(self, redirect_uri: str) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
        self.client = _Client("gateway-console", secrets.token_urlsafe(16), redirect_uri)
        self.codes: dict[str, _Code] = {}
        self.next_user: dict[str, Any] = {"sub": "official-1", "name": "Aigerim Reviewer", "gateway_role": "reviewer"}
        self.tamper: str | None = None  # "nonce" | "expired": the next ID token is wrong in that way
        self.challenges: list[str | None] = []  # code_challenge_method of each authorization request
        self.app = self._build()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.issuer = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def config(self) -> dict[str, Any]:
        """The gateway's settings for this provider."""
        return {"OIDC_METADATA_URL": self.metadata_url, "OIDC_CLIENT_ID": self.client.client_id,
                "OIDC_CLIENT_SECRET": self.client.client_secret, "OIDC_SCOPES": "openid profile"}

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)

    def _build(self) -> Flask:
        app = Flask("test-oidc-provider")
        app.config["SECRET_KEY"] = secrets.token_hex(16)
        provider = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code: str, req: Any) -> None:
                data = req.payload.data
                nonce = data.get("nonce")
                if provider.tamper == "nonce":
                    nonce, provider.tamper = "not-the-nonce-you-sent", None
                provider.challenges.append(data.get("code_challenge_method"))
                provider.codes[code] = _Code(code, req.client.client_id, req.payload.redirect_uri, req.payload.scope,
                                             dict(req.user), nonce, data.get("code_challenge"),
                                             data.get("code_challenge_method"))

            def query_authorization_code(self, code: str, client: Any) -> _Code | None:
                found = provider.codes.get(code)
                return found if found is not None and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: _Code) -> None:
                provider.codes.pop(authorization_code.code, None)  # a code is used once

            def authenticate_user(self, authorization_code: _Code) -> dict[str, Any]:
                return authorization_code.user

        class IdToken(OpenIDCode):
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(c.nonce == nonce for c in provider.codes.values())

            def resolve_client_private_key(self, client: Any) -> Any:
                return provider.key

            def get_client_algorithm(self, client: Any) -> str:
                return "RS256"

            def get_encode_header(self, client: Any) -> dict[str, str]:
                return {"alg": "RS256", "kid": "test-key"}

            def get_client_claims(self, client: Any) -> dict[str, Any]:
                now = int(time.time())
                lifetime = 3600
                if provider.tamper == "expired":
                    provider.tamper, lifetime = None, -3600
                    now -= 7200
                return {"iss": provider.issuer, "aud": [client.get_client_id()], "iat": now, "exp": now + 3600 + lifetime}

            def generate_user_info(self, user: dict[str, Any], scope: str) -> UserInfo:
                return UserInfo(**user)

        server = AuthorizationServer(app, query_client=lambda cid: provider.client if cid == provider.client.client_id else None,
                                     save_token=lambda token, req: None)
        server.register_grant(CodeGrant, [IdToken(require_nonce=True), CodeChallenge(required=True)])

        @app.get("/.well-known/openid-configuration")
        def metadata() -> Any:
            return jsonify({
                "issuer": provider.issuer, "authorization_endpoint": f"{provider.issuer}/authorize",
                "token_endpoint": f"{provider.issuer}/token", "jwks_uri": f"{provider.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            })

        @app.get("/jwks")
        def jwks() -> Any:
            return jsonify({"keys": [provider.key.as_dict(private=False)]})

        @app.get("/authorize")
        def authorize() -> Any:
            if not request.args.get("code_challenge"):
                return "PKCE is required", 400
            user = dict(provider.next_user)  # consent is given at once: the test chose who signs in
            try:
                grant = server.get_consent_grant(end_user=user)
            except OAuth2Error as error:
                return error.description or error.error, 400
            return server.create_authorization_response(grant_user=user, grant=grant)

        @app.post("/token")
        def token() -> Any:
            return server.create_token_response()

        return app
