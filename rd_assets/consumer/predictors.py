"""The bundle's model as something that predicts from a matrix in ``model_input_order``; never from a pickle.

* LightGBM: ``model.txt`` (LightGBM's own text format) through ``lightgbm.Booster(model_str=...)``. ``verify`` has
  already parsed the same bytes (hash-checked) in the isolated reader, so a string that crashes LightGBM's parser
  never reaches this process.
* torch: the ``state_dict`` from ``model.safetensors`` (a format without code) and the network class from the
  published ``model.py``. That file is LLM-written code: it is executed only when the caller passes
  ``trust_model_code=True``, as module ``model`` (qlib's ``pt_model_uri`` is ``model.model_cls``), and built with
  the ``pt_model_kwargs`` the wrapper was trained with. qlib's ``GeneralPTNN`` feeds ``float32`` and the network
  is put in ``eval()`` mode (dropout off), as qlib's ``predict`` does.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rd_assets.core.contracts.artifact_models import ModelMeta
from rd_assets.core.contracts.bundle_models import MODEL_PY, MODEL_SAFETENSORS, MODEL_TXT
from rd_assets.core.errors import ModelCodeUntrustedError, ModelLoadError

MODEL_MODULE = "model"


@dataclass(frozen=True)
class Predictor:
    """A loaded model: ``predict`` takes an (n, num_features) float64 matrix in training order, returns n scores."""

    kind: Literal["lightgbm", "torch"]
    num_features: int
    predict: Callable[[np.ndarray], np.ndarray]


def lightgbm_predictor(model_txt: bytes, num_features: int) -> Predictor:
    try:
        import lightgbm
    except ImportError:
        raise ModelLoadError("lightgbm is not installed (pip install lightgbm)", path=MODEL_TXT) from None
    try:
        booster = lightgbm.Booster(model_str=model_txt.decode("utf-8"))
    except (lightgbm.basic.LightGBMError, ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"lightgbm cannot load it: {exc}", path=MODEL_TXT) from None
    if booster.num_feature() != num_features:
        raise ModelLoadError(
            f"the booster takes {booster.num_feature()} features, model_input_order has {num_features}", path=MODEL_TXT
        )

    def predict(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(booster.predict(matrix), dtype="float64")

    return Predictor("lightgbm", num_features, predict)


def _network_class(module: types.ModuleType, meta: ModelMeta) -> tuple[type, dict[str, Any]]:
    """The class qlib instantiated (``pt_model_uri``, else ``network_class``) and the kwargs it was given."""
    trained = meta.trained_model_kwargs or {}
    uri = trained.get("pt_model_uri") or meta.network_class
    if not isinstance(uri, str) or uri.split(".", 1)[0] != MODEL_MODULE or uri.count(".") != 1:
        raise ModelLoadError(f"the network is {uri!r}, not a class of the published model.py", path=MODEL_PY)
    cls = getattr(module, uri.split(".", 1)[1], None)
    if not isinstance(cls, type):
        raise ModelLoadError(f"model.py defines no class {uri.split('.', 1)[1]!r} ({uri})", path=MODEL_PY)
    kwargs = trained.get("pt_model_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ModelLoadError(f"pt_model_kwargs is {kwargs!r}, not a mapping", path="model_meta.json")
    return cls, kwargs


def _import_model_py(source: bytes, filename: str) -> types.ModuleType:
    """Execute the published model.py as module ``model`` (registered only while it runs, as qlib's import does)."""
    module = types.ModuleType(MODEL_MODULE)
    module.__file__ = filename
    previous = sys.modules.get(MODEL_MODULE)
    sys.modules[MODEL_MODULE] = module
    try:
        exec(compile(source.decode("utf-8"), filename, "exec"), module.__dict__)
    except Exception as exc:
        raise ModelLoadError(f"model.py failed to import: {type(exc).__name__}: {exc}", path=MODEL_PY) from None
    finally:
        if previous is None:
            sys.modules.pop(MODEL_MODULE, None)
        else:
            sys.modules[MODEL_MODULE] = previous
    return module


def torch_predictor(
    safetensors: bytes, model_py: bytes, *, filename: str, meta: ModelMeta, num_features: int, trust_model_code: bool
) -> Predictor:
    if not trust_model_code:
        raise ModelCodeUntrustedError(
            "the network is the run's own model.py (LLM-written code); pass trust_model_code=True "
            "(rd-assets score --trust-model-code) to import it",
            path=MODEL_PY,
        )
    try:
        import torch
        from safetensors.torch import load as load_safetensors
    except ImportError:
        raise ModelLoadError("torch is not installed (pip install torch)", path=MODEL_SAFETENSORS) from None
    state = load_safetensors(safetensors)
    cls, kwargs = _network_class(_import_model_py(model_py, filename), meta)
    try:
        network = cls(**kwargs)
        network.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelLoadError(f"{cls.__name__}(**{kwargs}) does not take the weights: {exc}", path=MODEL_PY) from None
    network.eval()

    def predict(matrix: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = network(torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)))
        scores = out.detach().cpu().numpy().astype("float64")
        if scores.size != len(matrix):
            raise ModelLoadError(f"the network returned {scores.shape} for {len(matrix)} rows", path=MODEL_PY)
        return scores.reshape(len(matrix))

    return Predictor("torch", num_features, predict)
