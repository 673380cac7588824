"""Prepare the German-credit demo in the gateway's instance (what `make run` does before serving).

    python examples/setup_demo.py

Trains and registers the example model if no version of it is registered (and the multi-class and
regression examples of examples/more_kinds), and creates a demo agency
API key if no agency key exists (printed once: only its hash is stored). Prints a curl command for a
decision, and one-time sign-in links for the demo reviewer and auditor (new ones on every run: each works
once, for 15 minutes; `gateway keys sign-in-link demo-reviewer` prints another). Uses the instance the `gateway` command uses (GATEWAY_INSTANCE_PATH / GATEWAY_DATABASE_URL).
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

from sqlalchemy import select

from gateway import create_app, officials, registry
from gateway.auth import create_key
from gateway.db import write_transaction
from gateway.extensions import db
from gateway.manifest import load_manifest
from gateway.models import ApiClient

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "german_credit"
MODEL_NAME = "german-credit"


def _train() -> Path:
    spec = importlib.util.spec_from_file_location("german_credit_train", EXAMPLE / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest_path: Path = module.train(EXAMPLE, verbose=False)
    return manifest_path


def ensure_model() -> str:
    """Register the example model unless a version of it is registered; return a status line."""
    if any(row.name == MODEL_NAME for row in registry.list_models(serving_only=False)):
        return f"model {MODEL_NAME}: already registered"
    manifest, folder = load_manifest(_train())
    assert manifest.artifact and manifest.explanation.background
    artifact = (folder / manifest.artifact).read_bytes()
    background = (folder / manifest.explanation.background).read_bytes()
    with write_transaction():
        registry.register(manifest, artifact, background, activate=True, registered_by="make run")
    return f"model {MODEL_NAME} {manifest.version}: trained and registered (sha256 {manifest.sha256[:12]}…)"


def ensure_more_kinds() -> list[str]:
    """Register the multi-class and regression examples (examples/more_kinds) unless registered; status lines."""
    spec = importlib.util.spec_from_file_location("more_kinds_train", HERE / "more_kinds" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registered = {row.name for row in registry.list_models(serving_only=False)}
    missing = [name for name in module.EXAMPLES if name not in registered]
    lines = [f"model {name}: already registered" for name in module.EXAMPLES if name in registered]
    if missing:
        trained = module.train(HERE / "more_kinds")
        for name in missing:
            manifest, folder = load_manifest(trained[name])
            assert manifest.artifact and manifest.explanation.background
            with write_transaction():
                registry.register(manifest, (folder / manifest.artifact).read_bytes(),
                                  (folder / manifest.explanation.background).read_bytes(),
                                  activate=True, registered_by="make run")
            lines.append(f"model {name} {manifest.version} ({manifest.policy.kind}): trained and registered")
    return lines


def ensure_key() -> str | None:
    """Create a demo agency key unless an agency key exists; return the new key or None."""
    exists = db.session.execute(
        select(ApiClient.id).where(ApiClient.role == "agency", ApiClient.revoked_at.is_(None))
    ).first()
    if exists:
        return None
    with write_transaction():
        _, key = create_key(name="demo-agency", role="agency", body="Demo agency")
    return key


def sign_in_links(base: str) -> dict[str, str]:
    """A demo reviewer and auditor (created once), and a fresh one-time sign-in link for each."""
    found = {}
    for role in ("reviewer", "auditor"):
        name = f"demo-{role}"
        with write_transaction():
            client = db.session.execute(select(ApiClient).where(ApiClient.name == name)).scalar_one_or_none()
            if client is None:
                client, _ = create_key(name=name, role=role, body="Demo review office" if role == "reviewer" else "Demo audit office")
            if client.revoked_at is None:
                found[role] = base + officials.sign_in_path(officials.issue_link(client))
    return found


def main() -> int:
    app = create_app()
    with app.app_context():
        print(ensure_model())
        for line in ensure_more_kinds():
            print(line)
        key = ensure_key()
        base = app.config["PUBLIC_BASE_URL"].rstrip("/")
        routes, notices = app.config.get("NOTIFY_ROUTES") or {}, app.config.get("NOTIFY_FILE_DIR")
        links = sign_in_links(base)
        held = registry.manifest_of(registry.public_model(MODEL_NAME).id).held_for_confirmation
    body = json.dumps(json.loads((EXAMPLE / "sample_request.json").read_text()), ensure_ascii=False)
    if key:
        print("\nDemo agency API key (shown once; only its hash is stored):\n  " + key)
    else:
        key = "<your agency key>"
        print("\nAn agency key exists already (keys are shown only when created). For a new one:\n"
              "  .venv/bin/gateway keys create --role agency --name another-agency")
    print("\nOnce the server is up, record a decision:\n")
    print(
        f"curl -sS -X POST {base}/v1/models/{MODEL_NAME}/decisions \\\n"
        f"  -H 'Authorization: Bearer {key}' \\\n"
        f"  -H \"Idempotency-Key: $(date +%s%N)\" \\\n"
        f"  -H 'Content-Type: application/json' \\\n"
        f"  --data {shlex.quote(body)}\n"
    )
    if held:
        which = "Every decision" if held == "all" else "A decline (the sample above is one)"
        print(f"{which} waits for an authorised officer's confirmation before the person is\n"
              "told (the example is high-risk: AI Law Art. 17 oversight). Confirm it as an officer: in the\n"
              f"console ({base}/console/confirmations, after the demo reviewer's sign-in link below), or over\n"
              "the API with a reviewer key:\n")
        print(
            "REVIEWER=$(.venv/bin/gateway keys create --role reviewer --name demo-officer-$(date +%s))\n"
            f"curl -sS -X POST {base}/v1/confirmations/claim -H \"Authorization: Bearer $REVIEWER\" \\\n"
            "  -H 'Content-Type: application/json' --data '{}'   # gives review_id and fencing_token\n"
            f"curl -sS -X POST {base}/v1/reviews/<review_id>/confirm -H \"Authorization: Bearer $REVIEWER\" \\\n"
            "  -H 'Content-Type: application/json' --data '{\"fencing_token\": <fencing_token>, \"outcome\": \"confirmed\"}'\n"
        )
    if routes.get("email") == "file" and notices:
        print(f"The person's notice is written to {notices}/<notification id>.eml (no mail server here): open\n"
              "the personal link in it (…/d/<decision id>?token=…) in a browser to read the decision, its\n"
              "explanation, and to ask for a human review.\n")
    for role, where in (("reviewer", "the review console, /console"), ("auditor", "the audit pages, /audit")):
        if role in links:
            print(f"Sign in as the demo {role} ({where}); the link works once, for 15 minutes:\n  {links[role]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
