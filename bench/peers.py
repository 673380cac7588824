"""Build the peer model servers' virtualenvs (MLServer, MLflow) that the remote tests and benchmarks use.

    python bench/peers.py [NAME ...]        # default: every tests/peers/NAME.txt

The same code as the tests (tests/remote/conftest.py ``peer_venv``): one virtualenv per peer under
GATEWAY_TEST_PEERS_DIR (default .cache/peers), from tests/peers/NAME.txt with scikit-learn, numpy, pandas
and joblib pinned to this environment's versions; a virtualenv already built from the same requirements
is kept. Exits 1, saying why, when one cannot be built.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest

from tests.remote.conftest import PEERS, REQUIREMENTS, peer_venv


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in REQUIREMENTS.glob("*.txt"))
    failed = 0
    for name in names:
        print(f"[peers] {name}: building under {PEERS} unless already built (minutes)", file=sys.stderr, flush=True)
        try:
            print(f"{name}: {peer_venv(name)}")
        except pytest.skip.Exception as exc:
            print(f"{name}: not built: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
