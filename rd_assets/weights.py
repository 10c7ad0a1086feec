"""The anchor's model weight: the bytes of ``model.pkl`` / ``params.pkl`` exactly as the session holds them.

DESIGN.md rule 3: the weight comes only from the anchor factor experiment's ``sub_workspace_list[*].file_dict``.
Model experiments, mlruns and the disk are never consulted, so a missing weight is reported, never searched for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from rd_assets.artifact_models import ModelWeightInfo
from rd_assets.errors import WeightsNotPersistedError
from rd_assets.trace import attr

WEIGHT_KEYS: tuple[Literal["model.pkl", "params.pkl"], ...] = ("model.pkl", "params.pkl")
"""In order of preference: a ``model.pkl`` in any sub-workspace beats a ``params.pkl`` in an earlier one."""


@dataclass(frozen=True)
class ModelWeight:
    """The weight's provenance (JSON-able) and its bytes (published unchanged, never put into JSON)."""

    info: ModelWeightInfo
    data: bytes


def _sub_workspace_keys(workspaces: list[Any]) -> str:
    parts = []
    for i, ws in enumerate(workspaces):
        files = attr(ws, "file_dict")
        if ws is None:
            parts.append(f"[{i}] None (coding failed)")
        elif not isinstance(files, dict):
            parts.append(f"[{i}] no file_dict")
        else:
            parts.append(f"[{i}] {sorted(str(k) for k in files)}")
    return "; ".join(parts) if parts else "no sub-workspaces"


def resolve_model_weight(anchor_exp: Any, *, hist_index: int) -> ModelWeight:
    """First ``model.pkl`` bytes of any sub-workspace (index order), else the first ``params.pkl``."""
    workspaces = attr(anchor_exp, "sub_workspace_list")
    workspaces = list(workspaces) if isinstance(workspaces, list | tuple) else []
    for key in WEIGHT_KEYS:
        for i, ws in enumerate(workspaces):
            files = attr(ws, "file_dict")
            value = files.get(key) if isinstance(files, dict) else None
            if isinstance(value, bytes | bytearray):
                data = bytes(value)
                info = ModelWeightInfo(
                    resolved_model_weight_key=key,
                    hist_index=hist_index,
                    sub_workspace_index=i,
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    location=f"trace.hist[{hist_index}][0].sub_workspace_list[{i}].file_dict[{key!r}]",
                )
                return ModelWeight(info=info, data=data)
    present = _sub_workspace_keys(workspaces)
    raise WeightsNotPersistedError(
        f"weights not persisted in session: the anchor factor experiment trace.hist[{hist_index}] has no "
        f"model.pkl/params.pkl bytes in sub_workspace_list[*].file_dict; keys present: {present}"
    )
