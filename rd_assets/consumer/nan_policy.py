"""The NaN policy of scoring: what the executed config's inference processors did to a missing feature.

qlib's ``DataHandlerLP`` runs ``infer_processors`` on the features of training and of inference alike. When they
hold a ``Fillna`` for the feature group, the model never saw a NaN: a NaN is filled with its ``fill_value``
(qlib's default 0). When they do not, NaN reached the model in training too (LightGBM routes it as missing; a
torch network returns NaN, and such rows are left unranked). Every other inference processor (``RobustZScoreNorm``,
``ZScoreNorm`` ...) is not applied, because the statistics it fitted on the training segment are not in the
session: the features given to :meth:`rd_assets.consumer.bundle.Bundle.score` must already be their output. The
policy lists them, so nobody mistakes raw features for model inputs.
"""

from __future__ import annotations

from typing import Any

from rd_assets.core.contracts.artifact_models import ModelMeta
from rd_assets.core.contracts.consumer_models import NanPolicy
from rd_assets.core.errors import ModelLoadError

FEATURE_GROUP = "feature"


def _class_name(spec: Any) -> str:
    if isinstance(spec, dict):
        return str(spec.get("class", "")).rsplit(".", 1)[-1]
    return str(spec).rsplit(".", 1)[-1]


def _kwargs(spec: Any) -> dict[str, Any]:
    kwargs = spec.get("kwargs") if isinstance(spec, dict) else None
    return kwargs if isinstance(kwargs, dict) else {}


def _touches_features(kwargs: dict[str, Any]) -> bool:
    group = kwargs.get("fields_group")
    return group is None or group == FEATURE_GROUP or (isinstance(group, list) and FEATURE_GROUP in group)


def _describe(index: int, spec: Any) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(_kwargs(spec).items()))
    return f"infer_processors[{index}]: {_class_name(spec)}({kwargs})"


def nan_policy(meta: ModelMeta) -> NanPolicy:
    """The policy the executed config implies; :class:`ModelLoadError` when its fill value is not a number."""
    processors = meta.infer_processors
    if processors is None:
        why = meta.config_unresolved_reason or f"{meta.config_name} declares no infer_processors"
        return NanPolicy(kind="keep", source=f"no inference processors ({why}): NaN reached the model in training")
    fill = [(i, p) for i, p in enumerate(processors) if _class_name(p) == "Fillna" and _touches_features(_kwargs(p))]
    filled = {i for i, _ in fill}
    others = [_describe(i, p) for i, p in enumerate(processors) if i not in filled]
    if not fill:
        return NanPolicy(
            kind="keep", source="no Fillna among infer_processors: NaN reached the model in training",
            processors_not_applied=others,
        )  # fmt: skip
    index, spec = fill[-1]
    value = _kwargs(spec).get("fill_value", 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelLoadError(f"{_describe(index, spec)}: fill_value {value!r} is not a number", path="model_meta.json")
    return NanPolicy(kind="fill", fill_value=float(value), source=_describe(index, spec), processors_not_applied=others)
