"""The bundle contract (DESIGN.md section 4): the JSON documents consumers read from a published bundle.

Layout of one published version (immutable once published)::

    manifest.json            Manifest
    sota_factors.json        SotaFactorsDoc
    factor_order.json        FactorOrder
    model_meta.json          ModelMeta
    extract_report.json      ExtractReport
    model.pkl | params.pkl   the weight bytes exactly as found (never renamed)
    model.txt                LightGBM text export, when the model is LightGBM
    factor_entry.py          the anchor's own factor code (sub_task 0)
    factors/<safe name>.py   one per SOTA factor

Only ``manifest.json`` carries timestamps; every other file is a pure function of the log dir, so the
same log dir gives byte-identical files and the same ``content_hash``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rd_assets.models import (
    Contract,
    Document,
    ErrorInfo,
    FactorRecord,
    SnapshotCandidate,
)

MANIFEST = "manifest.json"
SOTA_FACTORS = "sota_factors.json"
FACTOR_ORDER = "factor_order.json"
MODEL_META = "model_meta.json"
EXTRACT_REPORT = "extract_report.json"
MODEL_TXT = "model.txt"
FACTOR_ENTRY = "factor_entry.py"


class ModelWeightInfo(Contract):
    """Where the weight bytes came from; the bytes themselves travel beside this, never inside JSON."""

    resolved_model_weight_key: Literal["model.pkl", "params.pkl"]
    resolved_model_weight_source: Literal["factor_exp"] = "factor_exp"
    hist_index: int
    sub_workspace_index: int
    size: int
    sha256: str
    location: str = Field(description="e.g. trace.hist[3][0].sub_workspace_list[0].file_dict['model.pkl']")


class ModelIntrospection(Contract):
    """What the restricted unpickler could learn about the model without importing qlib/lightgbm/torch."""

    class_path: str | None
    kind: Literal["lightgbm", "other", "unreadable"]
    feature_count: int | None
    feature_count_reason: str | None = Field(None, description="why feature_count is null")
    feature_names: list[str] | None = None
    objective: str | None = None
    num_trees: int | None = None
    model_txt_sha256: str | None = None


class FactorOrder(Document):
    """The authoritative input order of the model: Alpha158 names, then the parquet's dynamic names."""

    task_id: str
    config_name: str | None = Field(description="the qlib config the anchor ran")
    config_reason: str
    alpha158_factors: list[str] | None
    alpha158_source: str | None = None
    alpha158_unresolved_reason: str | None = None
    dynamic_factors: list[str] | None
    dynamic_source: str | None = Field(None, description="the parquet path read (footer only)")
    dynamic_unresolved_reason: str | None = None
    model_input_order: list[str] | None
    alpha158_count: int | None
    dynamic_count: int | None
    model_input_count: int | None
    model_feature_count: int | None
    is_aligned: bool
    alignment_reason: str | None = None


class FactorCodeFile(Contract):
    name: str
    relpath: str = Field(description="factors/<safe name>.py inside the bundle")
    file_dict_key: str = Field(description="the key consumers use: factor.py, based_factor_{i}/factor.py")
    sha256: str | None
    defines_function: bool
    missing_reason: str | None = None


class BasedFactorEntry(Contract):
    based_index: int
    resolved_factor_entry_key: str
    factor_file_dict_keys: list[str]


class FactorCodeIndex(Contract):
    """Which code file serves which factor, and which factors lack a usable function."""

    files: list[FactorCodeFile]
    resolved_factor_entry_key: str | None
    factor_file_dict_keys: list[str]
    based_factor_entries: list[BasedFactorEntry]
    incomplete: list[str] = Field(description="factor names without code defining calculate_<name>")


class ModelMeta(Document):
    task_id: str
    config_name: str | None
    config_unresolved_reason: str | None = None
    model_class: str | None = None
    model_module: str | None = None
    model_kwargs: dict[str, Any] | None = None
    dataset_class: str | None = None
    dataset_segments: dict[str, Any] | None = None
    handler_class: str | None = None
    handler_kwargs: dict[str, Any] | None = None
    loader_class: str | None = None
    loader_kwargs: dict[str, Any] | None = None
    learn_processors: list[Any] | None = None
    infer_processors: list[Any] | None = None
    label: list[Any] | None = None
    weight_class_path: str | None = None


class SotaFactorsDoc(Document):
    task_id: str
    last_sota_factor_index: int
    factors: list[FactorRecord] = Field(description="code text is omitted here: see code_relpath")
    code_relpaths: dict[str, str] = Field(description="factor name -> factors/<safe name>.py")


class FileEntry(Contract):
    sha256: str
    size: int


class SessionAnchor(Contract):
    chosen_session_file: str
    source_session_dir_id: str = Field(description="the loop folder of the chosen snapshot")
    loop_idx: int
    step_idx: int
    hist_len: int
    tie_rule: str
    tied_snapshots: list[str]
    candidates: list[SnapshotCandidate]


class SotaFactorAnchor(Contract):
    last_sota_factor_index: int
    anchor_class_path: str
    resolved_model_weight_key: str | None
    resolved_model_weight_source: Literal["factor_exp"] | None
    resolved_factor_entry_key: str | None
    factor_file_dict_keys: list[str]
    based_factor_entries: list[BasedFactorEntry]


class Manifest(Document):
    task_id: str
    task_run_id: str | None
    generated_at_utc: str
    tool_version: str
    content_hash: str = Field(description="sha256 over the sorted (relpath, sha256) of every file but this one")
    session_anchor: SessionAnchor
    sota_factor_anchor: SotaFactorAnchor
    primary_assets: dict[str, str | None] = Field(
        description="role -> relpath: model_weight, model_txt, sota_factors, factor_order, model_meta, factor_entry"
    )
    files: dict[str, FileEntry]
    selection_ready: bool
    reasons: list[str]


class ExtractReport(Document):
    task_id: str
    log_dir_name: str
    chosen_snapshot: str
    unpickled_snapshots: int
    skipped_candidates: list[ErrorInfo]
    paths_opened_outside_session: list[str]
    path_map: list[str]
    model: ModelIntrospection | None
    weight: ModelWeightInfo | None
    weight_error: ErrorInfo | None = None
    factor_code_incomplete: list[str]
    notes: list[str] = []
