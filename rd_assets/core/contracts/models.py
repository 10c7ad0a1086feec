"""Typed contracts: every JSON rd-assets writes or serves is one of these pydantic models.

Each top-level document carries ``schema_version``; ``rd-assets schema`` publishes their JSON Schemas.
Field names the stock-selection system already uses (``resolved_model_weight_key``, ``hist_len``,
``last_sota_factor_index``, ``chosen_session_file``, ``based_factor_entries`` ...) are kept verbatim.

Every contract accepts only values its JSON can carry (:func:`json_safe`): text from a hostile session may
hold lone surrogates, which no UTF-8 writer can encode, so they are escaped to the literal text ``\\udXXX``
when a contract is built (visible, reversible by eye, and idempotent). Non-finite floats become ``None``,
which is what pydantic writes for them in JSON anyway, so a Python dump fed to ``json.dumps(allow_nan=False)``
agrees with it. Integers too long for ``str()``, containers nested deeper than :data:`MAX_JSON_DEPTH` (or
holding more than :data:`MAX_JSON_VALUES` values) and objects pydantic cannot write are refused
(``ValidationError``) when the contract is built, instead of failing later, when it is written.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticSerializationError, to_json

from rd_assets.core.text_safety import escape_surrogates

SCHEMA_VERSION = "1.2"
"""1.2: the selection system's field names beside ours (``factor_order``, ``*_relpath``, ``loop_id`` ...) and the
executed config's text in the bundle (additive to 1.1). 1.1: torch exports, model.py, loader order rule, alpha
source, warnings (additive to 1.0)."""

MAX_JSON_DEPTH = 32
"""Deepest container nesting a contract holds; deeper data from a session is cut or refused, never recursed into."""

MAX_JSON_VALUES = 1_000_000
"""Most values (containers, keys and leaves) one field of a contract holds; bounds the check's walk."""


def int_fits_json(value: int) -> bool:
    """Whether ``str(value)`` stays under the interpreter's int-to-text limit (4,300 digits by default).

    Three bits per digit undercounts (log2(10) > 3), so an accepted int never reaches the limit.
    """
    limit = sys.get_int_max_str_digits()
    return limit == 0 or value.bit_length() <= 3 * limit


def json_safe(value: Any) -> Any:
    """``value`` with surrogates escaped and non-finite floats as ``None``; ``ValueError`` for what JSON cannot hold.

    Nested contracts have checked themselves; any other leaf (a date, an enum, bytes, an unpickled stand-in) is
    accepted only when pydantic can write it. Unchanged values come back as the same objects, so checking a clean
    document copies nothing. The walk is bounded in depth and in size (:data:`MAX_JSON_VALUES`): one list shared
    many times over would otherwise cost time exponential in its depth.
    """
    left = [MAX_JSON_VALUES]

    def check(item: Any, depth: int) -> Any:
        left[0] -= 1
        if left[0] < 0:
            raise ValueError(f"more than {MAX_JSON_VALUES} values")
        if isinstance(item, str):
            return escape_surrogates(item)
        if item is None or isinstance(item, bool | BaseModel):
            return item
        if isinstance(item, int):
            if not int_fits_json(item):
                raise ValueError(f"an integer of {item.bit_length()} bits is too long to write as JSON text")
            return item
        if isinstance(item, float):
            return item if math.isfinite(item) else None
        if not isinstance(item, dict | list | tuple | set | frozenset):
            try:
                to_json(item)
            except PydanticSerializationError as exc:
                raise ValueError(f"a {type(item).__name__} cannot be written as JSON") from exc
            return item
        if depth >= MAX_JSON_DEPTH:
            raise ValueError(f"data nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            pairs = [(check(k, depth + 1), check(v, depth + 1)) for k, v in item.items()]
            if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, item.items(), strict=True)):
                return item
            return dict(pairs)
        checked = [check(v, depth + 1) for v in item]
        if all(a is b for a, b in zip(checked, item, strict=True)):
            return item
        return type(item)(checked) if type(item) in (list, tuple, set, frozenset) else checked

    return check(value, 0)


class Contract(BaseModel):
    """Base of every contract: unknown fields are refused so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _json_safe_fields(self, info: ValidationInfo) -> Contract:
        # JSON input: its parser already refuses lone surrogates, over-long ints and deep nesting, and skipping
        # the walk keeps warm reads (index hits, parsed from JSON a contract wrote) at half the cost.
        if info.mode == "json":
            return self
        for name, value in list(self.__dict__.items()):
            try:
                checked = json_safe(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
            if checked is not value:
                self.__dict__[name] = checked
        return self


class Document(Contract):
    schema_version: Literal["1.1", "1.2"] = Field(
        SCHEMA_VERSION, description="1.2 is written; 1.1 documents still validate (1.2 only adds optional fields)"
    )


class ErrorInfo(Contract):
    code: str
    message: str
    path: str | None = None


# ---------------------------------------------------------------- session reading (issue: session reader)


class SnapshotCandidate(Contract):
    """One ``__session__/<loop>/<step>_<name>`` file, as seen by stat and (once) by the unpickler."""

    relpath: str = Field(description="path under the task log dir, always with '/' separators")
    loop_idx: int
    step_idx: int
    step_name: str
    size: int
    mtime_ns: int
    hist_len: int | None = Field(None, description="len(trace.hist); null when the file was skipped")
    file_format: Literal["plain", "signed"] | None = None
    signature: str | None = Field(None, description="verified / signature not verified / unsigned")
    loop_class: str | None = None
    error: ErrorInfo | None = Field(None, description="why this candidate was skipped")


class SnapshotSelection(Document):
    """Which snapshot was chosen and why: every candidate is listed for audit."""

    task_id: str
    chosen_snapshot: str = Field(description="relpath of the chosen snapshot under the log dir")
    chosen_loop_idx: int
    chosen_step_idx: int
    hist_len: int
    tied_snapshots: list[str] = Field(description="relpaths with the same (longest) hist, by (loop, step)")
    tie_rule: str
    candidates: list[SnapshotCandidate]
    skipped: int
    loop_class: str | None = None
    file_format: Literal["plain", "signed"] | None = None
    signature: str | None = None


class FactorRecord(Contract):
    """One SOTA factor: what it is, its code, its metrics and where in the trace it came from."""

    name: str
    description: str | None = None
    formulation: str | None = None
    variables: dict[str, Any] | None = None
    code: str | None = Field(None, description="text of the paired sub-workspace's factor.py")
    code_sha256: str | None = None
    code_missing_reason: str | None = None
    metrics: dict[str, float | int | str | None] | None = None
    metrics_unavailable_reason: str | None = None
    hist_index: int | None = Field(None, description="index in trace.hist of the experiment it came from")
    experiment_class_path: str
    based_index: int | None = Field(None, description="index in the anchor's based_experiments; null = anchor")
    sub_task_index: int
    file_dict_key: str = Field(description="consumer key: factor.py, factor_{j}.py, based_factor_{i}/factor.py")


class BasedExperimentRef(Contract):
    based_index: int
    class_path: str | None
    kind: Literal["placeholder", "factor", "model", "other"]
    hist_index: int | None
    factor_names: list[str] = []


class SubWorkspaceRef(Contract):
    index: int
    class_path: str | None
    file_dict_keys: list[str] = Field(description="keys of file_dict; empty for a None workspace")
    workspace_path: str | None = None


class SotaFactorExperiment(Document):
    """The last accepted qlib factor experiment (the anchor) and the SOTA factor list it implies."""

    task_id: str
    chosen_snapshot: str
    hist_len: int
    last_sota_factor_index: int
    anchor_class_path: str
    anchor_hypothesis: str | None = None
    feedback_reason: str | None = None
    anchor_metrics: dict[str, float | int | str | None] | None = None
    anchor_metrics_unavailable_reason: str | None = None
    based_experiments: list[BasedExperimentRef]
    sub_workspaces: list[SubWorkspaceRef]
    experiment_workspace_path: str | None = Field(None, description="str() of the pickled workspace_path")
    experiment_workspace_path_style: Literal["posix", "windows"] | None = None
    experiment_workspace_files: list[str] = []
    experiment_workspace_yaml: dict[str, str] = Field(
        default_factory=dict, description="the conf_*.yaml texts of experiment_workspace.file_dict"
    )
    sota_factors: list[FactorRecord]
    task_run_id: str | None = None
    base_features: dict[str, str] | None = Field(
        None, description="the anchor's base_features (alpha names -> expressions, insertion order), when it has them"
    )
    base_features_problem: str | None = Field(None, description="why a present base_features cannot be used")
    sota_model_hist_index: int | None = Field(
        None, description="hist index of the last accepted model experiment among based_experiments"
    )
    model_py: str | None = Field(None, description="the network source the sota_model config imported (model.py)")
    model_py_source: str | None = Field(None, description="where model_py was found in the session")
    model_py_problem: str | None = Field(None, description="why model_py is absent although a model experiment ran")


class InspectResult(Document):
    """What ``rd-assets inspect --json`` prints: selection, anchor and factors, or the error."""

    task_id: str
    log_dir: str
    ok: bool
    chosen_snapshot: str | None = None
    hist_len: int | None = None
    last_sota_factor_index: int | None = None
    sota_factors: list[FactorRecord] = []
    candidates: list[SnapshotCandidate] = []
    selection: SnapshotSelection | None = None
    error: ErrorInfo | None = None
