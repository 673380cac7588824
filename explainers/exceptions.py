"""Errors raised by the explainers library; each one says what went wrong and what to do instead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class ExplainerError(Exception):
    """Base class of every error this library raises on purpose."""


class UnsupportedModelError(ExplainerError, TypeError):
    """No registered explainer can explain this model."""

    def __init__(self, model: object, known: Sequence[str], reasons: Mapping[str, str] | None = None) -> None:
        self.model_type = f"{type(model).__module__}.{type(model).__qualname__}"
        self.known = tuple(known)
        self.reasons = dict(reasons or {})
        why = "; ".join(f"{name}: {reason}" for name, reason in self.reasons.items())
        super().__init__(
            f"no explainer supports a model of type {self.model_type} "
            f"(known explainers: {', '.join(self.known)})" + (f"; {why}" if why else "")
        )


class UnsupportedTransformerError(ExplainerError, TypeError):
    """A preprocessing step cannot be mapped column by column back to the raw features."""

    def __init__(self, step: str, transformer: object, reason: str = "") -> None:
        self.step = step
        self.transformer_type = type(transformer).__name__ if not isinstance(transformer, str) else repr(transformer)
        self.reason = reason
        super().__init__(
            f"preprocessing step {step!r} ({self.transformer_type}) cannot be mapped back to raw features"
            + (f": {reason}" if reason else "")
        )


class UnsupportedOutputSpaceError(ExplainerError, ValueError):
    """The explainer cannot explain this model additively in the requested output space."""

    def __init__(self, explainer: str, output_space: str, supported: Sequence[str], hint: str = "") -> None:
        self.explainer = explainer
        self.output_space = output_space
        self.supported = tuple(supported)
        super().__init__(
            f"the {explainer!r} explainer cannot explain this model in output space {output_space!r} "
            f"(supported here: {', '.join(self.supported) or 'none'})" + (f"; {hint}" if hint else "")
        )


class UnknownExplainerError(ExplainerError, LookupError):
    """An explainer was requested by a name that is not registered."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown explainer {name!r} (known explainers: {', '.join(self.known)})")


class AdditivityError(ExplainerError, ArithmeticError):
    """Base value plus attributions does not reproduce the model output within the tolerance."""

    def __init__(self, method: str, output_space: str, max_error: float, tolerance: float, where: str = "") -> None:
        self.method = method
        self.output_space = output_space
        self.max_error = max_error
        self.tolerance = tolerance
        super().__init__(
            f"{method}: |base + sum(attributions) - model output| = {max_error:.3g} exceeds the tolerance "
            f"{tolerance:.3g} in output space {output_space!r}" + (f" ({where})" if where else "")
        )


class NotFittedError(ExplainerError, AttributeError):
    """The explainer was used before `fit` was called."""

    def __init__(self, explainer: object) -> None:
        super().__init__(f"{type(explainer).__name__} is not fitted yet: call fit(background) first")
