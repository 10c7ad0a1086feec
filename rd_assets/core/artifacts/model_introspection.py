"""Learn what the weight is without importing qlib, lightgbm or torch, and export LightGBM models as text.

The weight pickle is read with the same restricted unpickler as session files: qlib's ``LGBModel`` and
lightgbm's ``Booster`` become inert stand-ins whose pickled state we read. A pickled ``Booster`` keeps its
whole model as LightGBM's own text format (state key ``_handle``, ``handle`` before lightgbm 4), so
``model.txt`` is that string verbatim and plain ``lightgbm`` loads it without qlib or pickle.

A qlib torch wrapper (``GeneralPTNN``, ``DNNModelPytorch`` ...) is read by :mod:`rd_assets.core.artifacts.torch_state`:
its network's ``state_dict`` is rebuilt from the pickled storages without torch, the feature count is the
input width of the first 2-D weight, and ``model.safetensors`` loads into a freshly built network.

A refused or unreadable pickle is not raised: it is returned as ``kind="unreadable"`` with the typed
error's code and message in ``feature_count_reason``, so the caller can still publish an incomplete bundle;
so is a torch network whose tensors are forged or truncated (:class:`TorchWeightError`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from rd_assets.core.artifacts.torch_state import export_safetensors, read_torch_state
from rd_assets.core.contracts.artifact_models import ModelIntrospection, TensorSpec
from rd_assets.core.errors import RdAssetsError, TorchWeightError
from rd_assets.core.isolation import BYTES_AS_BASE64, isolated
from rd_assets.core.session.standins import class_path
from rd_assets.core.session.unpickler import safe_loads
from rd_assets.core.text_safety import utf8_problem
from rd_assets.core.trace.experiments import attr

BOOSTER_CLASS = "lightgbm.basic.Booster"
_BOOSTER_STATE_KEYS = ("_handle", "handle")
_WRAPPER_ATTRS = ("model", "_Booster")
"""Where wrappers keep their Booster: qlib ``LGBModel.model``, lightgbm sklearn ``LGBMModel._Booster``."""


@dataclass(frozen=True)
class ModelExport:
    """What the weight is, plus ``model.txt`` (LightGBM) or ``model.safetensors`` (torch) bytes, else ``None``."""

    __pydantic_config__ = BYTES_AS_BASE64

    introspection: ModelIntrospection
    model_txt: str | None
    safetensors: bytes | None = None


@dataclass(frozen=True)
class _Header:
    feature_count: int | None
    feature_count_reason: str | None
    feature_names: list[str] | None
    objective: str | None
    num_trees: int


def _find_booster(obj: Any) -> Any:
    if class_path(obj) == BOOSTER_CLASS:
        return obj
    for name in _WRAPPER_ATTRS:
        inner = attr(obj, name)
        if class_path(inner) == BOOSTER_CLASS:
            return inner
    return None


def _parse_header(model_txt: str) -> _Header:
    """Read the ``key=value`` header LightGBM writes before ``Tree=0`` and count the trees."""
    header: dict[str, str] = {}
    num_trees = 0
    in_header = True
    for line in model_txt.splitlines():
        if line.startswith("Tree="):
            in_header = False
            num_trees += 1
        elif in_header and "=" in line:
            key, _, value = line.partition("=")
            header.setdefault(key, value)
        elif line.startswith("end of trees"):
            break
    names = header.get("feature_names", "").split() or None
    objective = header.get("objective") or None
    raw_idx = header.get("max_feature_idx")
    if raw_idx is None or not raw_idx.strip().lstrip("-").isdigit():
        return _Header(None, "the LightGBM model string has no integer max_feature_idx", names, objective, num_trees)
    count = int(raw_idx) + 1
    if names is not None and len(names) != count:
        reason = f"max_feature_idx+1 = {count} but feature_names lists {len(names)} names"
        return _Header(None, reason, names, objective, num_trees)
    return _Header(count, None, names, objective, num_trees)


def _torch_or_other(obj: Any, path: str) -> ModelExport:
    """A torch network's state and safetensors export; ``kind="other"`` when ``obj`` holds no network."""
    try:
        state = read_torch_state(obj)
        blob = export_safetensors(state) if state is not None else None
    except TorchWeightError as exc:
        return _uncounted(path, "unreadable", str(exc))
    if state is None or blob is None:
        reason = f"model class {path} is not LightGBM and holds no torch network; its feature count is not readable"
        return _uncounted(path, "other", reason)
    info = ModelIntrospection(
        class_path=path,
        kind="torch",
        feature_count=state.feature_count,
        feature_count_reason=state.feature_count_reason,
        network_class=state.network_class,
        first_layer_key=state.first_layer_key,
        first_layer_shape=list(state.first_layer_shape) if state.first_layer_shape is not None else None,
        tensors=[TensorSpec(name=t.name, dtype=t.dtype, shape=list(t.shape)) for t in state.tensors],
        wrapper_kwargs=state.wrapper_kwargs,
        safetensors_sha256=hashlib.sha256(blob).hexdigest(),
    )
    return ModelExport(info, None, blob)


def _uncounted(path: str | None, kind: Literal["lightgbm", "other", "unreadable"], reason: str) -> ModelExport:
    """A model whose feature count cannot be read, and why: nothing is exported for it."""
    return ModelExport(
        ModelIntrospection(class_path=path, kind=kind, feature_count=None, feature_count_reason=reason), None
    )


@isolated
def introspect_model(data: bytes) -> ModelExport:
    """Unpickle ``data`` inertly; read a LightGBM model string or a torch network's state, else say why not.

    Runs in the isolated reader: the weight is untrusted bytes from the session.
    """
    try:
        obj = safe_loads(data, path="model weight")
    except RdAssetsError as exc:
        return _uncounted(None, "unreadable", str(exc))
    path = class_path(obj) or type(obj).__name__
    booster = _find_booster(obj)
    if booster is None:
        return _torch_or_other(obj, path)
    model_txt = next((attr(booster, k) for k in _BOOSTER_STATE_KEYS if isinstance(attr(booster, k), str)), None)
    if model_txt is not None and utf8_problem(model_txt) is not None:
        return _uncounted(path, "lightgbm", f"the model string inside {path} is not valid UTF-8 text")
    if model_txt is None or not model_txt.startswith("tree"):
        reason = f"the {BOOSTER_CLASS} inside {path} carries no LightGBM model string (untrained or foreign state)"
        return _uncounted(path, "lightgbm", reason)
    head = _parse_header(model_txt)
    info = ModelIntrospection(
        class_path=path,
        kind="lightgbm",
        feature_count=head.feature_count,
        feature_count_reason=head.feature_count_reason,
        feature_names=head.feature_names,
        objective=head.objective,
        num_trees=head.num_trees,
        model_txt_sha256=hashlib.sha256(model_txt.encode("utf-8")).hexdigest(),
    )
    return ModelExport(info, model_txt)
