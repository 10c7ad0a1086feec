"""The anchor's model weight: the bytes of ``model.pkl`` / ``params.pkl`` exactly as the session holds them.

DESIGN.md rule 3: the weight comes only from the anchor factor experiment's ``sub_workspace_list[*].file_dict``.
Model experiments, mlruns and the disk are never consulted, so a missing weight is reported, never searched for.
The sub-workspaces are read with the accessors of :mod:`rd_assets.core.trace.experiments`: a list, workspace or
file_dict of another shape is an :class:`~rd_assets.core.errors.UnreadableSnapshotError` naming its place,
not a missing weight.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from rd_assets.core.contracts.artifact_models import ModelWeightInfo
from rd_assets.core.errors import WeightsNotPersistedError
from rd_assets.core.trace.experiments import attr, expect_list, expect_object, file_dict_of, key_list
from rd_assets.core.trace.metrics import plain_text

WEIGHT_KEYS: tuple[Literal["model.pkl", "params.pkl"], ...] = ("model.pkl", "params.pkl")
"""In order of preference: a ``model.pkl`` in any sub-workspace beats a ``params.pkl`` in an earlier one."""


@dataclass(frozen=True)
class ModelWeight:
    """The weight's provenance (JSON-able) and its bytes (published unchanged, never put into JSON)."""

    info: ModelWeightInfo
    data: bytes


def _sub_workspace_files(anchor_exp: Any, where: str) -> list[dict[str, Any] | None]:
    """Per sub-workspace its file_dict (``None`` for a workspace that is ``None``: coding failed)."""
    found: list[dict[str, Any] | None] = []
    for i, raw in enumerate(expect_list(attr(anchor_exp, "sub_workspace_list"), f"{where}.sub_workspace_list")):
        ws = expect_object(raw, f"{where}.sub_workspace_list[{i}]")
        found.append(None if ws is None else file_dict_of(ws, f"{where}.sub_workspace_list[{i}]"))
    return found


def _present_keys(workspaces: list[dict[str, Any] | None]) -> str:
    """What the sub-workspaces hold instead, for the message (bounded: a message is no place for a dump)."""
    parts = [
        f"[{i}] None (coding failed)" if files is None else f"[{i}] {key_list(files)}"
        for i, files in enumerate(workspaces)
    ]
    return plain_text("; ".join(parts), 4000) if parts else "no sub-workspaces"


def resolve_model_weight(anchor_exp: Any, *, hist_index: int) -> ModelWeight:
    """First ``model.pkl`` bytes of any sub-workspace (index order), else the first ``params.pkl``."""
    where = f"trace.hist[{hist_index}][0]"
    workspaces = _sub_workspace_files(anchor_exp, where)
    for key in WEIGHT_KEYS:
        for i, files in enumerate(workspaces):
            value = files.get(key) if files is not None else None
            if isinstance(value, bytes | bytearray):
                data = bytes(value)
                info = ModelWeightInfo(
                    resolved_model_weight_key=key,
                    hist_index=hist_index,
                    sub_workspace_index=i,
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    location=f"{where}.sub_workspace_list[{i}].file_dict[{key!r}]",
                )
                return ModelWeight(info=info, data=data)
    raise WeightsNotPersistedError(
        f"weights not persisted in session: the anchor factor experiment trace.hist[{hist_index}] has no "
        f"model.pkl/params.pkl bytes in sub_workspace_list[*].file_dict; keys present: {_present_keys(workspaces)}"
    )
