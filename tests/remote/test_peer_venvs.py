"""The peer virtualenvs are built by one test process at a time (`make test` runs several side by side)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
import threading
from pathlib import Path

import pytest

from tests.remote import conftest as peers


def _built(folder: Path, name: str) -> None:
    """Mark `folder` as built from tests/peers/NAME.txt, as a finished build leaves it."""
    requirements = (peers.REQUIREMENTS / f"{name}.txt").read_text()
    key = hashlib.sha256(json.dumps([requirements, peers._pins(), sys.version]).encode()).hexdigest()
    folder.mkdir(parents=True)
    (folder / ".built").write_text(key)


def test_a_process_waits_for_the_one_building_and_then_finds_the_virtualenv_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "PEERS", tmp_path)
    # A build started here would fail at once (no Python to make the venv with): only waiting passes.
    monkeypatch.setattr(sys, "_base_executable", str(tmp_path / "no-python"), raising=False)
    returned: list[Path] = []
    with open(tmp_path / "mlserver.lock", "w") as building:  # another process is building it
        fcntl.flock(building, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: returned.append(peers.peer_venv("mlserver")))
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive() and returned == []  # it waits; it does not start a second build
        _built(tmp_path / "mlserver", "mlserver")  # the build finishes, then its lock is released
    waiter.join(10.0)
    assert returned == [tmp_path / "mlserver"]
    assert (tmp_path / "mlserver" / ".built").exists()  # found built: not removed and built again


def test_a_virtualenv_built_from_other_requirements_is_not_taken(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The stamp names what it was built from: a stale one starts a build (here refused at once: no venv)."""
    monkeypatch.setattr(peers, "PEERS", tmp_path)
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / ".built").write_text("built from an older tests/peers/mlflow.txt")
    monkeypatch.setattr(sys, "_base_executable", str(tmp_path / "no-python"), raising=False)
    with pytest.raises(pytest.skip.Exception, match="could not be built"):
        peers.peer_venv("mlflow")
    assert not (tmp_path / "mlflow" / ".built").exists()  # the stale build was removed, not reused
