"""The README is a contract: every route it names exists with that method, and every command it names runs.

Routes are read from the README's code spans (`GET /v1/…`, `POST /d/{id}/review`, …); each must match a
rule of the app's URL map with that method. Status codes and behaviours are covered by the tests of each
area; this test keeps the README from naming a route the code does not have.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import SECRETS, Gateway

README = Path(__file__).resolve().parents[1] / "README.md"
ROUTE = re.compile(r"`(GET|POST|PUT|DELETE|PATCH) (/[^`\s?]*)")
PLACEHOLDER = re.compile(r"\{[^}/]+\}")


def _pattern(path: str) -> re.Pattern[str]:
    """A README path with {placeholders} as a pattern over URL-map rules written with {placeholders}."""
    parts = PLACEHOLDER.split(path)
    return re.compile("^" + r"\{[^}/]+\}".join(re.escape(p) for p in parts) + "$")


def documented_routes() -> set[tuple[str, str]]:
    text = README.read_text()
    found = {(m.group(1), m.group(2).rstrip(".,;:")) for m in ROUTE.finditer(text)}
    assert len(found) >= 15, "the README's routes were not found: did its format change?"
    return found


def test_every_route_the_readme_names_exists(gateway: Gateway) -> None:
    rules = [(re.sub(r"<(?:[^<:>]+:)?([^<>]+)>", r"{\1}", r.rule), r.methods or set())
             for r in gateway.app.url_map.iter_rules()]
    missing = []
    for method, path in sorted(documented_routes()):
        pattern = _pattern(path)
        if not any(pattern.match(rule) and method in methods for rule, methods in rules):
            missing.append(f"{method} {path}")
    assert missing == [], f"the README names routes the app does not serve: {missing}"


def test_every_gateway_command_the_readme_names_exists(tmp_path: Path) -> None:
    named = set(re.findall(r"`gateway ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", README.read_text()))
    assert named, "no `gateway …` command found in the README"
    gateway = Path(sys.executable).parent / "gateway"
    for group, sub in sorted(named):
        args = [str(gateway), group] + ([sub] if sub and not sub.startswith("-") else []) + ["--help"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False,
                              env={"PATH": str(gateway.parent), "GATEWAY_INSTANCE_PATH": str(tmp_path),
                                   **{f"GATEWAY_{k}": v for k, v in SECRETS.items()}})
        assert done.returncode == 0 and "Usage:" in done.stdout, (args, done.stdout[-500:], done.stderr[-500:])
