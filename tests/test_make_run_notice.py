"""What `make run` gives a person: the notice of a decision, and the personal link in it opens their pages.

The same steps as `make run` (gateway init, db upgrade, examples/setup_demo.py, gateway serve with its
thread delivering), a decision over HTTP, the notice found where the demo says (instance/notices/*.eml),
and its personal link followed as a browser does (303, session cookie, the decision and explanation pages).
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SAMPLE_REQUEST
from tests.support.gateway_server import ServerProcess, run
from tests.web.browser.live import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def test_the_notice_of_make_run_opens_the_persons_pages(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    port = free_port()
    env |= {"GATEWAY_INSTANCE_PATH": str(tmp_path), "GATEWAY_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    gw = str(BIN / "gateway")
    run([gw, "init"], env=env)
    run([gw, "db", "upgrade"], env=env)
    demo = run([sys.executable, str(ROOT / "examples" / "setup_demo.py")], env=env)
    key = re.search(r"^\s+(gwk_\S+)$", demo, re.M)
    assert key, demo
    assert f"{tmp_path / 'notices'}/<notification id>.eml" in demo  # the demo says where the notice goes
    server = ServerProcess(argv=[gw, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"], env=env,
                           log_path=tmp_path / "serve.log")
    server.start(timeout=120)
    try:
        base = f"http://127.0.0.1:{port}"
        made = httpx.post(f"{base}/v1/models/german-credit/decisions", json=SAMPLE_REQUEST, timeout=30,
                          headers={"Authorization": f"Bearer {key.group(1)}", "Idempotency-Key": "make-run-1"})
        assert made.status_code == 201, made.text
        decision_id = made.json()["decision_id"]
        # The example is high-risk: the declined sample waits for an officer's confirmation, as the demo says;
        # confirmed the way it prints (a reviewer key from the CLI, claim, confirm), the notice goes.
        assert made.json()["confirmation"] == "pending_confirmation" and "/v1/confirmations/claim" in demo
        officer = {"Authorization": f"Bearer {run([gw, 'keys', 'create', '--role', 'reviewer', '--name', 'demo-officer'], env=env).strip()}"}
        claimed = httpx.post(f"{base}/v1/confirmations/claim", json={}, headers=officer, timeout=30)
        assert claimed.status_code == 200 and claimed.json()["decision_id"] == decision_id, claimed.text
        confirmed = httpx.post(f"{base}/v1/reviews/{claimed.json()['review_id']}/confirm", headers=officer, timeout=30,
                               json={"fencing_token": claimed.json()["fencing_token"], "outcome": "confirmed"})
        assert confirmed.status_code == 200, confirmed.text
        deadline = time.monotonic() + 60
        while not list((tmp_path / "notices").glob("*.eml")):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        (path,) = list((tmp_path / "notices").glob("*.eml"))
        notice = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert notice["To"] == SAMPLE_REQUEST["subject"]["contact"]["email"]
        text = notice.get_body(("plain",)).get_content()
        link = re.search(rf"{re.escape(base)}/d/{decision_id}\?token=gwc_[^\s&]+", text)
        assert link, text
        assert "gwc_" not in (tmp_path / "serve.log").read_text()  # the credential is in the file, not the log
        with httpx.Client(timeout=30) as browser:
            opened = browser.get(link.group(0))
            assert opened.status_code == 303 and opened.headers["location"].endswith(f"/d/{decision_id}")
            page = browser.get(f"{base}/d/{decision_id}")
            assert page.status_code == 200 and decision_id in page.text and 'lang="kk"' in page.text
            explanation = browser.get(f"{base}/d/{decision_id}/explanation")
            assert explanation.status_code == 200 and "<svg" in explanation.text
            review = browser.get(f"{base}/d/{decision_id}/review")
            assert review.status_code == 200 and 'name="csrf_token"' in review.text
        # The demo reviewer signs in with the one-time link make run printed (the key never reaches the browser).
        sign_in = re.search(rf"Sign in as the demo reviewer.*\n\s+({re.escape(base)}/signin/gws_\S+)", demo)
        assert sign_in, demo
        with httpx.Client(timeout=30) as official:
            confirm = official.get(sign_in.group(1))
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', confirm.text)
            assert confirm.status_code == 200 and csrf, confirm.text[:500]
            started = official.post(sign_in.group(1), data={"csrf_token": csrf.group(1)})
            assert started.status_code == 303 and started.headers["location"] == "/console"
            assert official.get(f"{base}/console").status_code == 200
            # The confirmation queue the demo names: the sample's decline was confirmed above, none waits.
            assert "/console/confirmations" in demo
            assert official.get(f"{base}/console/confirmations").status_code == 200
    finally:
        server.stop()
