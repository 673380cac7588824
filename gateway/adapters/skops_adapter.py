"""Models saved with skops: loaded with a trusted-type list from the gateway's config only."""

from __future__ import annotations

from typing import Any

import skops.io as sio

from gateway.adapters.base import AdapterError, UntrustedArtifactError
from gateway.adapters.sklearn_common import SklearnClassifierAdapter


class SkopsAdapter(SklearnClassifierAdapter):
    kind = "skops"

    @classmethod
    def load(cls, data: bytes, *, positive_class: Any, feature_names: list[str], config: dict[str, Any]) -> SkopsAdapter:
        trusted = list(config["SKOPS_TRUSTED_TYPES"])
        try:
            needed = sio.get_untrusted_types(data=data)
        except Exception as exc:  # skops raises many kinds on a corrupt file
            raise AdapterError(f"not a readable skops artifact: {exc}") from exc
        untrusted = sorted(set(needed) - set(trusted))
        if untrusted:
            raise UntrustedArtifactError(
                f"the artifact needs types this deployment does not trust: {untrusted} "
                "(add them to GATEWAY_SKOPS_TRUSTED_TYPES only after reviewing them)"
            )
        try:
            model = sio.loads(data, trusted=trusted)
        except Exception as exc:
            raise AdapterError(f"skops could not load the artifact: {exc}") from exc
        return cls(model, positive_class=positive_class, feature_names=feature_names)
