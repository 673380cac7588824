"""Fixtures for the jobs engine: a model only the model-agnostic explainer can explain, trained once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agnostic import train_mlp


@pytest.fixture(scope="session")
def mlp_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The German-credit MLP (model-agnostic explanations) trained once per session; its manifest path."""
    return train_mlp(tmp_path_factory.mktemp("german-mlp"))


@pytest.fixture(scope="session")
def mlp_manifest_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model of the same kind under another name (other bytes, other model id)."""
    return train_mlp(tmp_path_factory.mktemp("german-mlp-b"), name="german-credit-mlp-b", seed=1)
