"""What the parent learns from a session file, computed where the file is parsed (the isolated reader).

Only plain, validated data crosses back: a snapshot's ``hist`` length and loop class while scanning, then
the chosen snapshot's anchor summary and the anchor's weight bytes. The object graph itself never leaves the
reader. The scan's best snapshot so far stays in the reader's memory (one slot), so the chosen one is not
unpickled twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rd_assets.core.artifacts.weights import ModelWeight, resolve_model_weight
from rd_assets.core.contracts.artifact_models import ModelWeightInfo
from rd_assets.core.contracts.models import ErrorInfo, SotaFactorExperiment
from rd_assets.core.errors import SessionChangedError, WeightsNotPersistedError, rebuild_error
from rd_assets.core.isolation import BYTES_AS_BASE64, isolated
from rd_assets.core.session.file_format import SessionBody, load_body
from rd_assets.core.session.standins import class_path
from rd_assets.core.trace.experiments import anchor_experiment, hist_of, interpret_trace
from rd_assets.core.trace.metrics import plain_text


@dataclass(frozen=True)
class SnapshotSummary:
    hist_len: int
    loop_class: str | None


@dataclass(frozen=True)
class AnchorReading:
    """The chosen snapshot's anchor and its weight (or why there is none)."""

    __pydantic_config__ = BYTES_AS_BASE64

    anchor: SotaFactorExperiment
    weight_info: ModelWeightInfo | None
    weight_data: bytes | None
    weight_error: ErrorInfo | None

    @property
    def weight(self) -> ModelWeight | None:
        if self.weight_info is None or self.weight_data is None:
            return None
        return ModelWeight(info=self.weight_info, data=self.weight_data)

    def require_weight(self) -> ModelWeight:
        weight = self.weight
        if weight is None:
            error = self.weight_error or ErrorInfo(code=WeightsNotPersistedError.code, message="no weight")
            raise rebuild_error(error.code, error.message, error.path)
        return weight


MAX_CLASS_PATH_CHARS = 512
_kept: dict[str, tuple[str, int, Any]] = {}
"""scan token -> (relpath, hist length, object) of the best snapshot of the scan in progress."""


@isolated
def summarize_snapshot(body: SessionBody, scan: str) -> SnapshotSummary:
    """Unpickle one snapshot and measure its hist; keep it if it is the scan's best so far (ties: the later)."""
    obj = load_body(body)
    hist = hist_of(obj, path=body.shown)
    kept = _kept.get(scan)
    if kept is None or len(hist) >= kept[1]:
        _kept.clear()
        _kept[scan] = (body.shown, len(hist), obj)
    loop_class = class_path(obj)  # a pickle names any global it likes, of any length
    return SnapshotSummary(
        hist_len=len(hist), loop_class=plain_text(loop_class, MAX_CLASS_PATH_CHARS) if loop_class else None
    )


@isolated
def read_anchor(body: SessionBody, scan: str | None, task_id: str, expect_index: int | None) -> AnchorReading:
    """Interpret the chosen snapshot and resolve the anchor's weight; ``expect_index`` guards a re-read."""
    kept = _kept.pop(scan, None) if scan is not None else None
    obj = kept[2] if kept is not None and kept[0] == body.shown else load_body(body)
    del kept
    anchor = interpret_trace(obj, task_id=task_id, chosen_snapshot=body.shown)
    index, exp = anchor_experiment(obj, path=body.shown)
    if expect_index is not None and index != expect_index:
        raise SessionChangedError(
            f"the snapshot's anchor is trace.hist[{index}], the selected one trace.hist[{expect_index}]",
            path=body.shown,
        )
    try:
        weight = resolve_model_weight(exp, hist_index=index)
    except WeightsNotPersistedError as exc:
        return AnchorReading(anchor, None, None, ErrorInfo(code=exc.code, message=exc.message, path=exc.path))
    return AnchorReading(anchor, weight.info, weight.data, None)
