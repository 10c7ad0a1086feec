"""One task log dir in, one published bundle out: the one extraction, shared by the CLI and Dagster.

:func:`extraction_stages` reads the task and resolves its parts in a fixed order (the chosen snapshot, the
anchor, the weight and its model, the factor order, the factor code), yielding each part as soon as it is
known and finally the complete :class:`BundleParts`; :func:`publish_parts` turns those parts into a published
bundle. The CLI drains the stages (:func:`extract_task`); Dagster reports each stage as the materialization
of its asset and wires the rules of :mod:`rd_assets.core.bundle.rules` as checks. This module decides what
is fatal:

* ``no_sota_factor_experiment`` (and every reading error) always;
* ``weights_not_persisted`` unless ``allow_incomplete`` (then the bundle says ``selection_ready: false``);
* ``feature_count_mismatch`` when ``model_input_order`` does not match the model's feature count, unless
  ``allow_incomplete``. An order that cannot be confirmed counts as a mismatch too (parquet missing or
  unmapped, Alpha158 names that are Jinja placeholders, a model whose feature count is unknown): publishing
  it would replace a good bundle with one nobody can select from, only because a path map was forgotten;
* ``workspace_traversal`` when the run touched anything outside ``__session__`` but the anchor parquet;
* factor code that does not define its function is never fatal: the bundle is published, not ready.

Nothing is written under the log dir: the store and the index must live elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from rd_assets.core.artifacts.factor_code import FactorCodeSet, build_factor_code
from rd_assets.core.artifacts.factor_order import require_aligned, resolve_factor_order
from rd_assets.core.artifacts.model_introspection import ModelExport, introspect_model
from rd_assets.core.artifacts.model_meta import build_model_meta
from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.artifacts.weights import ModelWeight
from rd_assets.core.bundle.assemble import BundleContent, assemble_bundle
from rd_assets.core.bundle.rules import require_no_traversal
from rd_assets.core.bundle.store import PublishResult, extraction_lock, publish_bundle
from rd_assets.core.bundle.task_status import is_task_failure, record_failure
from rd_assets.core.contracts.artifact_models import FactorOrder, ModelMeta
from rd_assets.core.contracts.bundle_models import ExtractReport, ExtractRun
from rd_assets.core.contracts.models import ErrorInfo, SnapshotSelection, SotaFactorExperiment
from rd_assets.core.contracts.status_models import TaskFailure
from rd_assets.core.errors import (
    BundleStoreError,
    FeatureCountMismatchError,
    InvalidLogDirError,
    RdAssetsError,
    UnreadableSnapshotError,
    WeightsNotPersistedError,
)
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.file_format import SignatureStatus
from rd_assets.core.session.fingerprint import session_fingerprint
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.reading import AnchorReading
from rd_assets.core.session.snapshots import SESSION_DIR, newer_unreadable
from rd_assets.core.session.task_reader import TaskReading, read_task, reload_anchor
from rd_assets.core.task_ids import is_task_id

NEWER_SNAPSHOT_UNREADABLE = "newer_snapshot_unreadable"
SIGNATURE_UNVERIFIED = "signature_unverified"
PATH_MAP_RULE_UNUSED = "path_map_rule_unused"


@dataclass(frozen=True)
class ExtractOutcome:
    content: BundleContent
    publish: PublishResult
    report: ExtractReport
    """The full report, including the run counters (``run``) that the published copy leaves out."""


def _error_info(exc: RdAssetsError) -> ErrorInfo:
    return ErrorInfo(code=exc.code, message=exc.message, path=exc.path)


def refuse_inside(log_dir: Path, what: str, path: Path | None) -> None:
    """Refuse a write location under the log dir (callers check before creating anything there)."""
    if path is None:
        return
    log_dir, resolved = log_dir.resolve(), path.resolve()
    if resolved == log_dir or log_dir in resolved.parents:
        raise BundleStoreError(f"the {what} must not be inside the log dir (nothing is written there)", path=str(path))


def _outside_session(access: AccessLog, log_dir: Path) -> list[str]:
    session = log_dir / SESSION_DIR
    return sorted({p for p in access.opened_paths if session not in Path(p).parents})


def _weight(chosen: AnchorReading, allow_incomplete: bool) -> tuple[ModelWeight | None, ErrorInfo | None]:
    try:
        return chosen.require_weight(), None
    except WeightsNotPersistedError as exc:
        if not allow_incomplete:
            raise
        return None, _error_info(exc)


@dataclass(frozen=True)
class BundleParts:
    """Everything :func:`assemble_bundle` takes, as the core resolved it from one log dir."""

    selection: SnapshotSelection
    anchor: SotaFactorExperiment
    weight: ModelWeight | None
    model: ModelExport | None
    factor_order: FactorOrder
    factor_code: FactorCodeSet
    model_meta: ModelMeta
    report: ExtractReport

    def assemble(self, *, generated_at_utc: str | None = None) -> BundleContent:
        return assemble_bundle(
            **{f.name: getattr(self, f.name) for f in fields(self)}, generated_at_utc=generated_at_utc
        )


def _chosen(
    log_dir: Path, reading: TaskReading, anchor: SotaFactorExperiment, signing_key: str | None, access: AccessLog
) -> tuple[AnchorReading, int]:
    """The anchor with its weight (weights are not cached) and how many snapshots this run unpickled."""
    if reading.chosen is not None:  # this read interpreted the chosen snapshot already
        return reading.chosen, reading.unpickled
    chosen = reload_anchor(
        log_dir, reading.selection, anchor.last_sota_factor_index, signing_key=signing_key, access=access
    )
    return chosen, reading.unpickled + 1


def collect_warnings(
    selection: SnapshotSelection, anchor: SotaFactorExperiment, order: FactorOrder, path_map: PathMap
) -> list[str]:
    """Facts a consumer should see that do not block readiness, as ``code: why``."""
    warnings = []
    if selection.signature == SignatureStatus.NOT_VERIFIED.value:
        warnings.append(
            f"{SIGNATURE_UNVERIFIED}: {selection.chosen_snapshot} is signed but was read without "
            "RD_ASSETS_SIGNING_KEY, so its HMAC was not checked"
        )
    warnings += order.warnings
    pickled = [anchor.experiment_workspace_path] if anchor.experiment_workspace_path else []
    warnings += [
        f"{PATH_MAP_RULE_UNUSED}: the path-map rule {rule.source}={rule.target} matches no pickled path of this task"
        for rule in path_map.unused_rules(pickled)
    ]
    if anchor.model_py is not None and anchor.model_py_problem:
        warnings.append(f"model_py_differs: {anchor.model_py_source} {anchor.model_py_problem}")
    return warnings


def build_report(
    *,
    log_dir: Path,
    selection: SnapshotSelection,
    anchor: SotaFactorExperiment,
    access: AccessLog,
    path_map: PathMap,
    order: FactorOrder,
    model: ModelExport | None,
    weight: ModelWeight | None,
    code: FactorCodeSet,
    run: ExtractRun | None,
    weight_error: ErrorInfo | None = None,
    alignment_error: ErrorInfo | None = None,
) -> ExtractReport:
    """The extraction's diagnostics; the access lists come from ``access``, and a traversal is fatal."""
    log_dir = log_dir.resolve()
    require_no_traversal(access, log_dir, order)
    allowed = {order.dynamic_source} if order.dynamic_source else set()
    notes = [f"signature: {selection.signature}"] if selection.signature else []
    if model is not None and model.introspection.feature_count is None:
        notes.append(f"model feature count unknown: {model.introspection.feature_count_reason}")
    not_ready = [
        f"{NEWER_SNAPSHOT_UNREADABLE}: {e.path} is newer than the chosen {selection.chosen_snapshot} but was "
        f"skipped ({e.code}: {e.message}); the chosen state may be stale"
        for e in newer_unreadable(selection)
    ]
    return ExtractReport(
        task_id=selection.task_id,
        log_dir_name=log_dir.name,
        chosen_snapshot=selection.chosen_snapshot,
        skipped_candidates=[c.error for c in selection.candidates if c.error is not None],
        paths_opened_outside_session=_outside_session(access, log_dir),
        access_violations=access.violations(log_dir, allowed),
        path_map=[f"{rule.source}={rule.target}" for rule in path_map.rules],
        config_name=order.config_name,
        model=model.introspection if model is not None else None,
        weight=weight.info if weight is not None else None,
        weight_error=weight_error,
        alignment_error=alignment_error,
        factor_code_incomplete=code.index.incomplete,
        warnings=collect_warnings(selection, anchor, order, path_map),
        not_ready=not_ready,
        notes=notes,
        run=run,
    )


@dataclass(frozen=True)
class SessionStage:
    """The chosen snapshot; ``anchor_error`` says why it gave no anchor (the extraction stops right after)."""

    selection: SnapshotSelection
    anchor_error: RdAssetsError | None
    unpickled: int
    """Snapshots unpickled so far (fewer when the index knew them)."""
    index_state: str
    """``enabled`` or why the snapshot index was not used."""


@dataclass(frozen=True)
class AnchorStage:
    """The last SOTA factor experiment of the chosen trace."""

    anchor: SotaFactorExperiment


@dataclass(frozen=True)
class WeightStage:
    """The anchor's weight and what its model is; ``weight`` is None only when incompleteness is allowed."""

    weight: ModelWeight | None
    model: ModelExport | None
    error: ErrorInfo | None
    unpickled: int
    """Snapshots unpickled by the whole extraction (the chosen one is read again for its weight bytes)."""


@dataclass(frozen=True)
class OrderStage:
    """The model's input order; an unconfirmed one is fatal right after (unless incompleteness is allowed)."""

    order: FactorOrder


@dataclass(frozen=True)
class CodeStage:
    """Every SOTA factor's code file and the anchor's own."""

    code: FactorCodeSet


Stage = SessionStage | AnchorStage | WeightStage | OrderStage | CodeStage | BundleParts


def _alignment_error(order: FactorOrder, allow_incomplete: bool) -> ErrorInfo | None:
    try:
        require_aligned(order)
    except FeatureCountMismatchError as exc:
        if not allow_incomplete:
            raise
        return _error_info(exc)
    return None


def extraction_stages(
    log_dir: Path,
    *,
    path_map: PathMap,
    index: SnapshotIndex,
    signing_key: str | None = None,
    allow_incomplete: bool = False,
    access: AccessLog | None = None,
) -> Iterator[Stage]:
    """Read the task and resolve its parts, yielding each stage in order and finally the :class:`BundleParts`.

    A fatal typed error (module docstring) is raised in the stage that meets it, after the stages before it
    were yielded; a consumer that stops early reads nothing more.
    """
    log_dir = log_dir.resolve()
    access = access if access is not None else AccessLog()
    refuse_inside(log_dir, "snapshot index", index.path)
    reading = read_task(log_dir, index=index, signing_key=signing_key, access=access)
    index_state = index.unavailable_reason or "enabled"
    selection = reading.selection
    yield SessionStage(selection, reading.error, reading.unpickled, index_state)
    if reading.error is not None:
        raise reading.error
    anchor = reading.anchor
    if anchor is None:
        raise UnreadableSnapshotError("the chosen snapshot gave no anchor", path=selection.chosen_snapshot)
    yield AnchorStage(anchor)

    chosen, unpickled = _chosen(log_dir, reading, anchor, signing_key, access)
    weight, weight_error = _weight(chosen, allow_incomplete)
    del chosen, reading  # the loop object is large: keep only what the bundle needs
    model = introspect_model(weight.data) if weight is not None else None
    yield WeightStage(weight, model, weight_error, unpickled)

    order = resolve_factor_order(
        anchor,
        model_feature_count=model.introspection.feature_count if model is not None else None,
        weight_class_path=model.introspection.class_path if model is not None else None,
        path_map=path_map,
        access=access,
    )
    yield OrderStage(order)
    alignment_error = _alignment_error(order, allow_incomplete)

    code = build_factor_code(anchor)
    yield CodeStage(code)

    report = build_report(
        log_dir=log_dir,
        selection=selection,
        anchor=anchor,
        access=access,
        path_map=path_map,
        order=order,
        model=model,
        weight=weight,
        code=code,
        run=ExtractRun(unpickled_snapshots=unpickled, index=index_state),
        weight_error=weight_error,
        alignment_error=alignment_error,
    )
    yield BundleParts(
        selection=selection,
        anchor=anchor,
        weight=weight,
        model=model,
        factor_order=order,
        factor_code=code,
        model_meta=build_model_meta(anchor, model=model.introspection if model is not None else None),
        report=report,
    )


def collect_parts(
    log_dir: Path,
    *,
    path_map: PathMap,
    index: SnapshotIndex,
    signing_key: str | None = None,
    allow_incomplete: bool = False,
    access: AccessLog | None = None,
) -> BundleParts:
    """Every stage of :func:`extraction_stages`, keeping only the complete parts."""
    *_, parts = extraction_stages(
        log_dir,
        path_map=path_map,
        index=index,
        signing_key=signing_key,
        allow_incomplete=allow_incomplete,
        access=access,
    )
    assert isinstance(parts, BundleParts)  # the last stage always is
    return parts


def publish_parts(parts: BundleParts, *, store: Path, keep_versions: int = 3) -> ExtractOutcome:
    """The one way resolved parts become a published bundle (CLI and Dagster): assemble, publish atomically."""
    content = parts.assemble()
    publish = publish_bundle(store, content, keep_versions=keep_versions)
    return ExtractOutcome(content=content, publish=publish, report=parts.report)


def record_task_failure(
    store: Path, task_id: str, error: RdAssetsError, *, log_dir: Path, fingerprint: str | None = None
) -> TaskFailure | None:
    """What an extractor (the CLI, a Dagster run) does when a task fails: record ``error`` if the session caused it.

    ``fingerprint`` is that of the reading that failed; when the failure came before any snapshot was chosen, the
    session's fingerprint now (stat only) stands in, so a reader such as the daily schedule can still tell whether
    the session changed since. None only when the log dir cannot even be listed.
    """
    if not is_task_failure(error):
        return None
    if fingerprint is None:
        try:
            fingerprint = session_fingerprint(log_dir).token
        except (RdAssetsError, OSError):
            fingerprint = None
    return record_failure(store, task_id, error, fingerprint=fingerprint)


def checked_task_id(log_dir: Path) -> str:
    """The task id ``log_dir`` publishes under, checked before the store is touched (no lock left for a typo)."""
    resolved = log_dir.resolve()
    if not resolved.is_dir():
        raise InvalidLogDirError("log dir does not exist or is not a directory", path=str(log_dir))
    if not is_task_id(resolved.name):
        raise InvalidLogDirError(f"not a safe task id: {resolved.name!r}", path=str(log_dir))
    return resolved.name


def extract_task(
    log_dir: Path,
    *,
    store: Path,
    path_map: PathMap,
    index: SnapshotIndex,
    signing_key: str | None = None,
    allow_incomplete: bool = False,
    keep_versions: int = 3,
    access: AccessLog | None = None,
) -> ExtractOutcome:
    """Extract the task at ``log_dir`` and publish its bundle into ``store``; raises typed errors (see above)."""
    refuse_inside(log_dir.resolve(), "bundle store", store)
    with extraction_lock(store, checked_task_id(log_dir)):
        parts = collect_parts(
            log_dir,
            path_map=path_map,
            index=index,
            signing_key=signing_key,
            allow_incomplete=allow_incomplete,
            access=access,
        )
        return publish_parts(parts, store=store, keep_versions=keep_versions)
