"""Response contracts of the Results API; the bundle documents themselves are served as their own models.

Field names of the anchor responses are the ones the stock-selection system already reads
(``hist_len``, ``chosen_session_file``, ``last_sota_factor_index``, ``resolved_model_weight_key`` ...).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rd_assets.core.contracts.artifact_models import BasedFactorEntry
from rd_assets.core.contracts.models import Contract, Document, SnapshotCandidate


class ErrorBody(Contract):
    code: str = Field(description="stable machine code, e.g. task_not_found, invalid_key, unauthorized")
    message: str


class ErrorResponse(Contract):
    ok: Literal[False] = False
    error: ErrorBody


def error_envelope(code: str, message: str) -> ErrorResponse:
    """The one error shape every refusal uses, from a route or from the limits in front of the routes."""
    return ErrorResponse(error=ErrorBody(code=code, message=message))


class Health(Contract):
    ok: Literal[True] = True
    service: Literal["rd-assets"] = "rd-assets"
    version: str


class TaskSummary(Contract):
    task_id: str
    generated_at_utc: str
    selection_ready: bool
    factor_count: int = Field(description="number of SOTA factors in sota_factors.json")
    content_hash: str
    version: str = Field(description="the immutable version directory currently published")


class TaskProblem(Contract):
    task_id: str
    error: ErrorBody


class TaskList(Document):
    ok: Literal[True] = True
    total: int = Field(description="published tasks before limit/offset")
    limit: int
    offset: int
    tasks: list[TaskSummary] = Field(description="newest first: generated_at_utc, then task_id, descending")
    problems: list[TaskProblem] = Field(description="store entries that could not be read (never silently dropped)")


class SessionAnchorResponse(Document):
    ok: Literal[True] = True
    task_id: str
    source_session_dir_id: str
    chosen_session_file: str
    hist_len: int
    loop_idx: int
    step_idx: int
    tie_rule: str
    tied_snapshots: list[str]
    candidates: list[SnapshotCandidate]


class SotaFactorAnchorResponse(Document):
    ok: Literal[True] = True
    task_id: str
    hist_len: int
    chosen_session_file: str
    source_session_dir_id: str
    last_sota_factor_index: int
    resolved_model_weight_key: str | None
    resolved_model_weight_source: Literal["factor_exp"] | None
    resolved_factor_entry_key: str | None
    factor_file_dict_keys: list[str]
    based_factor_entries: list[BasedFactorEntry]
    selection_ready: bool
    reasons: list[str]
    content_hash: str
