"""The bundle contract (DESIGN.md section 4): the JSON documents consumers read from a published bundle.

Layout of one published version (immutable once published)::

    manifest.json            Manifest
    sota_factors.json        SotaFactorsDoc
    factor_order.json        FactorOrder
    model_meta.json          ModelMeta
    extract_report.json      ExtractReport
    model.pkl | params.pkl   the weight bytes exactly as found (never renamed)
    model.txt                LightGBM text export, when the model is LightGBM
    model.safetensors        torch state_dict export, when the model is a qlib torch model
    model.py                 the network's source (the model experiment's model.py the sota_model config imported)
    factor_entry.py          the anchor's own factor code (sub_task 0)
    factors/<safe name>.py   one per SOTA factor
    config/<config name>     the executed qlib config's YAML text as the session holds it (1.2)

Only ``manifest.json`` carries timestamps and run counters (``extract_run``); every other file is a pure
function of the log dir (and the path map), so the same log dir gives byte-identical files and the same
``content_hash``. A store keeps versions under ``<store>/.versions/<task_id>/<version>/`` and points the
symlink ``<store>/<task_id>`` at the current one (see :mod:`rd_assets.core.bundle.store`).
"""

from __future__ import annotations

from typing import Literal, NotRequired

from pydantic import ConfigDict, Field
from typing_extensions import TypedDict  # pydantic needs typing_extensions' TypedDict before Python 3.12

from rd_assets.core.contracts.artifact_models import BasedFactorEntry, ModelIntrospection, ModelWeightInfo
from rd_assets.core.contracts.models import (
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
MODEL_SAFETENSORS = "model.safetensors"
MODEL_PY = "model.py"
FACTOR_ENTRY = "factor_entry.py"
CONFIG_DIR = "config"

SELECTION_RELPATH_ROLES: dict[str, str | None] = {
    "factor_entry_relpath": "factor_entry",
    "model_weight_relpath": "model_weight",
    "model_meta_relpath": "model_meta",
    "factor_order_relpath": "factor_order",
    "config_relpath": None,
    "combined_factors_relpath": None,
}
"""The selection system's ``primary_assets.*_relpath`` keys -> the role of ours they equal. ``config_relpath`` is the
published executed config; ``combined_factors_relpath`` is always null (the anchor's parquet is never shipped)."""


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


class ExtractRun(Contract):
    """Counters that depend on the run (index warmth), not on the log dir: kept out of the content hash."""

    unpickled_snapshots: int = Field(description="snapshots this run had to unpickle (0..n; fewer when indexed)")
    index: str = Field(description="'enabled' or why the snapshot index was not used")


class PrimaryAssets(TypedDict):
    """Role -> relpath (null when the bundle has no such file); a plain dict in Python.

    The ``*_relpath`` keys are the selection system's names (schema 1.2); they are absent from 1.1 manifests.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    model_weight: str | None
    model_txt: str | None
    model_safetensors: str | None
    model_py: str | None
    sota_factors: str | None
    factor_order: str | None
    model_meta: str | None
    factor_entry: str | None
    extract_report: str | None
    factor_entry_relpath: NotRequired[str | None]
    model_weight_relpath: NotRequired[str | None]
    model_meta_relpath: NotRequired[str | None]
    factor_order_relpath: NotRequired[str | None]
    config_relpath: NotRequired[str | None]
    combined_factors_relpath: NotRequired[None]


class Manifest(Document):
    task_id: str
    task_run_id: str | None
    generated_at_utc: str
    tool_version: str
    content_hash: str = Field(
        description="sha256 over the sorted lines '<relpath>\\t<sha256>\\n' of every file but manifest.json"
    )
    session_anchor: SessionAnchor
    sota_factor_anchor: SotaFactorAnchor
    loop_id: int | None = Field(
        None, description="selection-system name of the chosen snapshot's loop folder (session_anchor.loop_idx)"
    )
    primary_assets: PrimaryAssets = Field(
        description="role -> relpath; the *_relpath keys repeat them under the selection system's names"
    )
    files: dict[str, FileEntry] = Field(description="every file of the version but manifest.json itself")
    selection_ready: bool
    reasons: list[str]
    warnings: list[str] = Field(
        default_factory=list, description="'code: why' facts a consumer should know that do not block readiness"
    )
    extract_run: ExtractRun | None = None


class ExtractReport(Document):
    """Diagnostics of one extraction; the published copy has ``run`` null so it stays deterministic."""

    task_id: str
    log_dir_name: str
    chosen_snapshot: str
    skipped_candidates: list[ErrorInfo]
    paths_opened_outside_session: list[str] = Field(
        description="from the run's AccessLog: every path opened that is not under __session__ (the one parquet)"
    )
    access_violations: list[str] = Field(
        description="paths opened or listed that are neither __session__ files nor the anchor parquet (must be empty)"
    )
    path_map: list[str]
    config_name: str | None = None
    model: ModelIntrospection | None
    weight: ModelWeightInfo | None
    weight_error: ErrorInfo | None = None
    alignment_error: ErrorInfo | None = Field(
        None, description="the feature_count_mismatch tolerated by allow-incomplete"
    )
    factor_code_incomplete: list[str]
    warnings: list[str] = Field(default_factory=list, description="copied into the manifest")
    not_ready: list[str] = Field(
        default_factory=list, description="'code: why' readiness gaps found while reading (newer snapshot unreadable)"
    )
    notes: list[str] = []
    run: ExtractRun | None = None


class VerifyReport(Document):
    """What ``rd-assets verify`` found: ``ok`` only when ``problems`` is empty."""

    bundle_dir: str
    version_dir: str | None
    task_id: str | None
    content_hash: str | None
    ok: bool
    problems: list[str]
    checked_files: int
    notes: list[str] = []


class ExtractResult(Document):
    """What ``rd-assets extract --json`` prints: where the bundle went, or the error that stopped it."""

    ok: bool
    task_id: str
    log_dir: str
    bundle_path: str | None = None
    version_dir: str | None = None
    content_hash: str | None = None
    changed: bool | None = Field(None, description="false: identical content was already current (no-op)")
    selection_ready: bool | None = None
    reasons: list[str] = []
    report: ExtractReport | None = None
    error: ErrorInfo | None = None
