"""The explicit registry of explainers and the factory that picks one for a model.

Explainers are probed in order - tree, linear, then the model-agnostic permutation fallback - and the
first whose `supports(model)` is true wins. The fallback can be disabled (the gateway does this when a
model must be explained exactly inside the decision transaction); then a model no exact explainer
supports raises `UnsupportedModelError` listing the known explainers and why each declined.
"""

from __future__ import annotations

import inspect
from typing import Any

from explainers.base import BaseExplainer
from explainers.exceptions import UnknownExplainerError, UnsupportedModelError
from explainers.linear import LinearExplainer
from explainers.permutation import PermutationExplainer
from explainers.tree import TreeExplainer

__all__ = ["EXPLAINERS", "FALLBACK", "choose_explainer", "get_explainer", "make_explainer"]

#: Registered explainers in probe order.
EXPLAINERS: dict[str, type[BaseExplainer]] = {
    TreeExplainer.name: TreeExplainer,
    LinearExplainer.name: LinearExplainer,
    PermutationExplainer.name: PermutationExplainer,
}

#: The model-agnostic explainer used when no exact one supports the model.
FALLBACK = PermutationExplainer.name


def get_explainer(name: str) -> type[BaseExplainer]:
    """Return the explainer class registered under `name`."""
    try:
        return EXPLAINERS[name]
    except KeyError:
        raise UnknownExplainerError(name, list(EXPLAINERS)) from None


def choose_explainer(model: Any, *, fallback: bool = True) -> type[BaseExplainer]:
    """Return the first registered explainer class that supports `model`."""
    reasons: dict[str, str] = {}
    for name, cls in EXPLAINERS.items():
        if name == FALLBACK and not fallback:
            reasons[name] = "the model-agnostic fallback is disabled"
            continue
        reason = cls.why_unsupported(model)
        if reason is None:
            return cls
        reasons[name] = reason
    raise UnsupportedModelError(model, list(EXPLAINERS), reasons)


def make_explainer(
    model: Any,
    *,
    output_space: str = "probability",
    random_state: int = 0,
    max_evals: int = 500,
    target_error: float | None = None,
    max_evals_cap: int | None = None,
    method: str | None = None,
    fallback: bool = True,
    **kwargs: Any,
) -> BaseExplainer:
    """Return an unfitted explainer for `model` (chosen by probing, or by `method` name).

    `max_evals`, `target_error` and `max_evals_cap` apply to the model-agnostic explainer only (None:
    its default); `kwargs` (positive_class,
    background_size, tolerance ...) go to the chosen explainer's constructor. Raises
    UnsupportedOutputSpaceError when the chosen explainer cannot explain the model additively in
    `output_space` - it never silently switches space or explainer.
    """
    if method is not None:
        cls = get_explainer(method)
        reason = cls.why_unsupported(model)
        if reason is not None:
            raise UnsupportedModelError(model, list(EXPLAINERS), {method: reason})
    else:
        cls = choose_explainer(model, fallback=fallback)
    cls.check_output_space(model, output_space)
    params = {"output_space": output_space, "random_state": random_state, **kwargs}
    accepted = inspect.signature(cls.__init__).parameters
    sampling = {"max_evals": max_evals, "target_error": target_error, "max_evals_cap": max_evals_cap}
    params.update({k: v for k, v in sampling.items() if k in accepted and v is not None})
    factory: Any = cls  # every concrete explainer takes (model, **params); the abstract base declares none
    explainer: BaseExplainer = factory(model, **params)
    return explainer
