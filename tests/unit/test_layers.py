"""The import-layer contract names every module of the gateway: a module it leaves out is not checked at all."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Outside the layers on purpose: the package's own lazy entry point and version, the docstring-only package
# files, the standalone verifier and the pure parts it shares (their own "forbidden" contract), the migrations.
OUTSIDE = {"gateway", "gateway._version", "gateway.jobs", "gateway.auditlog", "gateway.verify",
           "gateway.auditlog.merkle", "gateway.auditlog.note"}


def contracts() -> list[dict[str, object]]:
    found: list[dict[str, object]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]
    return found


def layered() -> set[str]:
    (layers,) = (c["layers"] for c in contracts() if c["type"] == "layers")
    assert isinstance(layers, list)
    return {name.strip("() ") for layer in layers for name in layer.replace("|", ":").split(":")}


def modules() -> set[str]:
    found = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.add(".".join(parts))
    return found


def test_every_gateway_module_sits_in_a_layer() -> None:
    named = layered()
    unplaced = sorted(
        m for m in modules()
        if m not in OUTSIDE and not m.startswith("gateway.migrations")
        and not any(m == n or m.startswith(n + ".") for n in named)
    )
    assert unplaced == [], f"place these modules in the layers contract of pyproject.toml: {unplaced}"


def test_the_modules_outside_the_layers_stand_alone() -> None:
    (standalone,) = (c for c in contracts() if str(c["name"]).startswith("The verifier stands alone"))
    assert {"gateway.verify", "gateway.auditlog.merkle", "gateway.auditlog.note"} <= set(standalone["source_modules"])
    for package in ("gateway/jobs/__init__.py", "gateway/auditlog/__init__.py"):  # docstrings, nothing imported
        tree = ast.parse((ROOT / package).read_text())
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
                   and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
        assert imports == [], package


# Where reading the Flask config by string key is the job: the HTTP edges, the wiring, the config itself, and two
# request-time helpers (the locale selector; the intake's webhook-address rule, a pydantic validator).
CONFIG_READERS = ("gateway/api/", "gateway/web/", "gateway/migrations/", "gateway/cli.py", "gateway/server.py",
                  "gateway/security.py", "gateway/app.py", "gateway/config.py", "gateway/settings.py",
                  "gateway/i18n.py", "gateway/schemas/decisions.py")


def test_services_take_settings_rather_than_reading_the_flask_config() -> None:
    readers = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "gateway").rglob("*.py")
        if not str(path.relative_to(ROOT)).startswith(CONFIG_READERS) and "current_app.config" in path.read_text()
    )
    assert readers == [], f"pass these services their settings instead of reading current_app.config: {readers}"


# The top of the stack imports lazily so that `import gateway.ids` and `gateway --help` stay light: it sits above
# every layer, so there is no cycle to dodge. Anywhere else a function-local import hides a cycle from the contract.
LAZY_TOP = {"gateway/__init__.py", "gateway/app.py", "gateway/cli.py", "gateway/server.py"}


def test_no_function_local_import_of_our_own_modules() -> None:
    found = []
    for package in ("gateway", "explainers"):
        for path in (ROOT / package).rglob("*.py"):
            name = str(path.relative_to(ROOT))
            if name in LAZY_TOP or name.startswith("gateway/migrations/"):
                continue
            for func in ast.walk(ast.parse(path.read_text())):
                if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(func):
                    modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                               else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                    found += [f"{name}:{node.lineno} {m}" for m in modules if m.split(".")[0] in ("gateway", "explainers")]
    assert found == [], f"import these at the top of the module (a cycle? fix the layering): {found}"
