"""``model_meta.json``: what the executed qlib config says about the model, dataset, loader and label.

Read from the executed YAML only (:func:`rd_assets.core.artifacts.qlib_config.decide_config`), never from
another template that happens to sit in the workspace. Unrendered Jinja values stay visible as ``"{{ expr }}"`` strings.
"""

from __future__ import annotations

from typing import Any

from rd_assets.core.artifacts.qlib_config import (
    dataset_spec,
    decide_config,
    handler_kwargs,
    handler_spec,
    parse_config,
    qualified,
    spec_kwargs,
)
from rd_assets.core.contracts.artifact_models import ModelIntrospection, ModelMeta
from rd_assets.core.contracts.models import SotaFactorExperiment

_HANDLER_PARTS = ("data_loader", "learn_processors", "infer_processors")
"""Handler kwargs reported in their own fields, left out of ``handler_kwargs`` to avoid saying them twice."""


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def _label(loader_kwargs: dict[str, Any], handler: dict[str, Any]) -> list[Any] | None:
    """The ``label`` pair of the loader's config (fork, upstream nested or baseline shape), else the handler's."""
    configs = [loader_kwargs.get("alpha158_config"), loader_kwargs.get("config")]
    nested = loader_kwargs.get("dataloader_l")
    configs += [spec_kwargs(sub).get("config") for sub in (nested if isinstance(nested, list) else [])]
    for config in configs:
        label = _list((_dict(config) or {}).get("label"))
        if label is not None:
            return label
    return _list(handler.get("label"))


def _trained(model: ModelIntrospection | None, anchor: SotaFactorExperiment) -> dict[str, Any]:
    """What the weight itself says about a torch network (its class, the kwargs it was trained with)."""
    if model is None or model.kind != "torch":
        return {}
    return {
        "network_class": model.network_class,
        "trained_model_kwargs": model.wrapper_kwargs,
        "model_py_source": anchor.model_py_source if anchor.model_py is not None else None,
    }


def build_model_meta(anchor: SotaFactorExperiment, *, model: ModelIntrospection | None) -> ModelMeta:
    """Model, dataset, handler, loader, processors and label of the config the anchor ran."""
    weight_class_path = model.class_path if model is not None else None
    decision = decide_config(anchor, weight_class_path=weight_class_path)
    config, problem = parse_config(decision)
    trained = _trained(model, anchor)
    if config is None:
        return ModelMeta(
            task_id=anchor.task_id,
            config_name=decision.name,
            config_reason=decision.reason,
            config_unresolved_reason=problem,
            weight_class_path=weight_class_path,
            **trained,
        )
    model = _dict((_dict(config.get("task")) or {}).get("model")) or {}
    dataset = dataset_spec(config)
    handler = handler_kwargs(config)
    loader = _dict(handler.get("data_loader")) or {}
    loader_kwargs = spec_kwargs(loader)
    return ModelMeta(
        task_id=anchor.task_id,
        config_name=decision.name,
        config_reason=decision.reason,
        model_class=model.get("class") if isinstance(model.get("class"), str) else None,
        model_module=model.get("module_path") if isinstance(model.get("module_path"), str) else None,
        model_kwargs=_dict(model.get("kwargs")),
        dataset_class=qualified(dataset),
        dataset_segments=_dict(spec_kwargs(dataset).get("segments")),
        handler_class=qualified(handler_spec(config)),
        handler_kwargs={k: v for k, v in handler.items() if k not in _HANDLER_PARTS},
        loader_class=qualified(loader),
        loader_kwargs=loader_kwargs or None,
        learn_processors=_list(handler.get("learn_processors")),
        infer_processors=_list(handler.get("infer_processors")),
        label=_label(loader_kwargs, handler),
        weight_class_path=weight_class_path,
        **trained,
    )
