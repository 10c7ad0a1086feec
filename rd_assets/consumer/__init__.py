"""Use published bundles: load and verify one, compute its factors in a sandbox, score features with its model.

Nothing here imports Dagster or the Results API. Names are loaded on first use, so the factor sandbox's own
process (which imports :mod:`rd_assets.consumer.factor_child`) does not pay for the loader and the models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rd_assets.consumer.bundle import Bundle, Scores, load_bundle
    from rd_assets.consumer.factor_compute import ComputedFactors, compute_factors
    from rd_assets.consumer.sandbox_limits import SandboxLimits

_EXPORTS = {
    "Bundle": "rd_assets.consumer.bundle",
    "Scores": "rd_assets.consumer.bundle",
    "load_bundle": "rd_assets.consumer.bundle",
    "ComputedFactors": "rd_assets.consumer.factor_compute",
    "compute_factors": "rd_assets.consumer.factor_compute",
    "SandboxLimits": "rd_assets.consumer.sandbox_limits",
}
__all__ = ["Bundle", "ComputedFactors", "SandboxLimits", "Scores", "compute_factors", "load_bundle"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
