"""Response contracts of the Results API; the bundle documents themselves are served as their own models.

Field names of the anchor responses are the ones the stock-selection system already reads
(``hist_len``, ``chosen_session_file``, ``last_sota_factor_index``, ``resolved_model_weight_key`` ...).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rd_assets.core.contracts.artifact_models import BasedFactorEntry
from rd_assets.core.contracts.models import Contract, Document, SnapshotCandidate
from rd_assets.core.contracts.status_models import TaskFailure

TaskState = Literal["ready", "published_not_ready", "failed", "unknown"]
"""ready: a published bundle with ``selection_ready``; published_not_ready: published, not ready (see ``reasons``);
failed: the last extraction failed (see ``failure``; an older bundle may still be published); unknown: never seen."""
ListedState = Literal["ready", "published_not_ready", "failed"]
"""The states ``/tasks`` lists and filters by (an unknown task has nothing to list)."""


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
    """What the store says about one task; the bundle fields are null when nothing is published."""

    task_id: str
    state: TaskState
    generated_at_utc: str | None = Field(None, description="when the published bundle was built")
    selection_ready: bool | None = None
    factor_count: int | None = Field(None, description="number of SOTA factors in sota_factors.json")
    content_hash: str | None = None
    version: str | None = Field(None, description="the immutable version directory currently published")
    reasons: list[str] = Field(default_factory=list, description="why the published bundle is not selection-ready")
    failure: TaskFailure | None = Field(None, description="why the last extraction failed (state failed)")
    corrupt_files: list[str] = Field(
        default_factory=list,
        description="published files found not to match their manifest entry; they answer 500 bundle_corrupt",
    )


class TaskStatus(Document, TaskSummary):
    """``/tasks/{task_id}/status``: one task's state, also for a failed or a never-seen task."""

    ok: Literal[True] = True


class TaskProblem(Contract):
    task_id: str
    error: ErrorBody


class TaskList(Document):
    ok: Literal[True] = True
    total: int = Field(description="tasks in the requested state before limit/offset")
    limit: int
    offset: int
    tasks: list[TaskSummary] = Field(
        description="newest first: generated_at_utc (failed_at_utc when never published), then task_id, descending"
    )
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
