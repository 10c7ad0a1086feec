"""The six partitioned assets of one RD-Agent task, each a thin call into the core.

``session_snapshot -> last_sota_factor_exp -> model_weight -> factor_order -> factor_code -> aistock_bundle``

Each step re-derives what it needs from the log dir or from the stored upstream values and refuses to go
on when the session moved under it (the sensor then requests a fresh run for the new fingerprint). Steps
that touch the log dir or the workspace record their :class:`AccessLog` in their metadata; the
``no_workspace_traversal`` check and the bundle's extract report are built from those records, so the audit
holds whichever executor (one process or one per step) runs the chain.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterInstance,
    MetadataValue,
    Output,
    asset,
    define_asset_job,
    with_source_code_references,
)

from rd_assets import __version__
from rd_assets.core.artifacts.factor_code import FactorCodeSet, build_factor_code
from rd_assets.core.artifacts.factor_order import resolve_factor_order
from rd_assets.core.artifacts.model_introspection import ModelExport, introspect_model
from rd_assets.core.artifacts.model_meta import build_model_meta
from rd_assets.core.artifacts.weights import ModelWeight
from rd_assets.core.bundle.assemble import assemble_bundle
from rd_assets.core.bundle.extract import build_report
from rd_assets.core.bundle.store import publish_bundle
from rd_assets.core.contracts.artifact_models import FactorOrder
from rd_assets.core.contracts.bundle_models import ExtractReport, ExtractRun, Manifest
from rd_assets.core.contracts.models import SCHEMA_VERSION, SnapshotSelection, SotaFactorExperiment
from rd_assets.core.errors import (
    RdAssetsError,
    SessionChangedError,
    UnreadableSnapshotError,
    WeightsNotPersistedError,
    WorkspaceTraversalError,
)
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.fingerprint import selection_fingerprint
from rd_assets.core.session.task_reader import TaskReading, read_task, reload_anchor
from rd_assets.defs.checks import (
    access_metadata,
    order_problems,
    recorded_access,
    text_or_null,
    weight_source_problems,
    weight_source_result,
    weight_source_spec,
)
from rd_assets.defs.partitions import rd_task_partitions
from rd_assets.defs.resources import BundleStore, RdLogRoot

GROUP = "rd_task"
OWNERS = ["team:rd-assets"]
CODE_VERSION = f"{__version__}+schema{SCHEMA_VERSION}"
"""Changes when the package or its document contract does: Dagster then marks earlier materializations stale."""
META_UNPICKLED = "unpickled_snapshots"
META_INDEX = "snapshot_index"


class BlockingCheckError(RdAssetsError):
    """A rule a blocking check enforces does not hold; raised when the check itself was not in the run."""

    code = "blocking_check_failed"


def _read(rd_log_root: RdLogRoot, task_id: str, access: AccessLog) -> tuple[TaskReading, str]:
    with rd_log_root.open_index() as index:
        reading = read_task(
            rd_log_root.log_dir(task_id), index=index, signing_key=rd_log_root.signing_key(), access=access
        )
        return reading, index.unavailable_reason or "enabled"


def _same_session(selection: SnapshotSelection, expected: SnapshotSelection) -> None:
    now, then = selection_fingerprint(selection), selection_fingerprint(expected)
    if now != then or selection.chosen_snapshot != expected.chosen_snapshot:
        raise SessionChangedError(
            f"the session changed during the run (fingerprint {then.token} -> {now.token}, chosen "
            f"{expected.chosen_snapshot} -> {selection.chosen_snapshot}); a new run is requested for it",
            path=selection.task_id,
        )


@asset(
    partitions_def=rd_task_partitions,
    group_name=GROUP,
    kinds={"python", "pickle"},
    owners=OWNERS,
    code_version=CODE_VERSION,
    description="The session snapshot with the longest trace.hist, with every candidate for audit.",
)
def session_snapshot(context: AssetExecutionContext, rd_log_root: RdLogRoot) -> Output[SnapshotSelection]:
    access = AccessLog()
    reading, index_state = _read(rd_log_root, context.partition_key, access)
    sel = reading.selection
    fp = selection_fingerprint(sel)
    metadata: dict[str, Any] = {
        "chosen_snapshot": MetadataValue.text(sel.chosen_snapshot),
        "hist_len": MetadataValue.int(sel.hist_len),
        "candidates": MetadataValue.int(len(sel.candidates)),
        "skipped": MetadataValue.int(sel.skipped),
        "tied_snapshots": MetadataValue.json(sel.tied_snapshots),
        "file_format": text_or_null(sel.file_format),
        "signature": text_or_null(sel.signature),
        "loop_class": text_or_null(sel.loop_class),
        "session_fingerprint": MetadataValue.text(fp.token),
        "anchor_error": text_or_null(str(reading.error) if reading.error else None),
        META_UNPICKLED: MetadataValue.int(reading.unpickled),
        META_INDEX: MetadataValue.text(index_state),
        **access_metadata(access),
    }
    return Output(sel, metadata=metadata)


@asset(
    partitions_def=rd_task_partitions,
    group_name=GROUP,
    kinds={"python", "pydantic"},
    owners=OWNERS,
    code_version=CODE_VERSION,
    description="The last accepted qlib factor experiment in the chosen trace and its SOTA factor list.",
)
def last_sota_factor_exp(
    context: AssetExecutionContext, rd_log_root: RdLogRoot, session_snapshot: SnapshotSelection
) -> Output[SotaFactorExperiment]:
    access = AccessLog()
    reading, _ = _read(rd_log_root, context.partition_key, access)
    _same_session(reading.selection, session_snapshot)
    if reading.error is not None:
        raise reading.error
    anchor = reading.anchor
    if anchor is None:
        raise UnreadableSnapshotError("the chosen snapshot gave no anchor", path=session_snapshot.chosen_snapshot)
    names = [f.name for f in anchor.sota_factors]
    return Output(
        anchor,
        metadata={
            "anchor_hist_index": MetadataValue.int(anchor.last_sota_factor_index),
            "hist_len": MetadataValue.int(anchor.hist_len),
            "anchor_class_path": MetadataValue.text(anchor.anchor_class_path),
            "factor_count": MetadataValue.int(len(names)),
            "factor_names": MetadataValue.json(names),
            "task_run_id": text_or_null(anchor.task_run_id),
            "workspace_path": text_or_null(anchor.experiment_workspace_path),
            **access_metadata(access),
        },
    )


@asset(
    partitions_def=rd_task_partitions,
    group_name=GROUP,
    kinds={"python", "pickle"},
    owners=OWNERS,
    code_version=CODE_VERSION,
    check_specs=[weight_source_spec],
    description="The anchor's model.pkl/params.pkl bytes, only from its sub_workspace_list[*].file_dict.",
)
def model_weight(
    context: AssetExecutionContext,
    rd_log_root: RdLogRoot,
    session_snapshot: SnapshotSelection,
    last_sota_factor_exp: SotaFactorExperiment,
) -> Iterator[Output[ModelWeight] | AssetCheckResult]:
    access = AccessLog()
    hist_index = last_sota_factor_exp.last_sota_factor_index
    chosen = reload_anchor(
        rd_log_root.log_dir(context.partition_key),
        session_snapshot,
        hist_index,
        signing_key=rd_log_root.signing_key(),
        access=access,
    )
    try:
        weight = chosen.require_weight()
    except WeightsNotPersistedError as exc:
        yield weight_source_result(None, last_sota_factor_exp, exc)
        raise
    info = weight.info
    yield Output(
        weight,
        metadata={
            "weight_key": MetadataValue.text(info.resolved_model_weight_key),
            "weight_source": MetadataValue.text(info.resolved_model_weight_source),
            "weight_size": MetadataValue.int(info.size),
            "weight_sha256": MetadataValue.text(info.sha256),
            "weight_location": MetadataValue.text(info.location),
            "anchor_hist_index": MetadataValue.int(info.hist_index),
            META_UNPICKLED: MetadataValue.int(1),
            **access_metadata(access),
        },
    )
    yield weight_source_result(weight, last_sota_factor_exp)


@asset(
    partitions_def=rd_task_partitions,
    group_name=GROUP,
    kinds={"python", "parquet", "yaml"},
    owners=OWNERS,
    code_version=CODE_VERSION,
    description="The model's input order: alpha names and the anchor parquet's columns (footer only), ordered "
    "by the executed config's data loader, compared with the model's feature count.",
)
def factor_order(
    context: AssetExecutionContext,
    rd_log_root: RdLogRoot,
    last_sota_factor_exp: SotaFactorExperiment,
    model_weight: ModelWeight,
) -> Output[FactorOrder]:
    access = AccessLog()
    model = introspect_model(model_weight.data).introspection
    order = resolve_factor_order(
        last_sota_factor_exp,
        model_feature_count=model.feature_count,
        weight_class_path=model.class_path,
        path_map=rd_log_root.parsed_path_map(),
        access=access,
    )
    return Output(
        order,
        metadata={
            "config_name": MetadataValue.text(order.config_name or "unresolved"),
            "model_class": text_or_null(model.class_path),
            "model_kind": MetadataValue.text(model.kind),
            "model_feature_count": MetadataValue.text(str(model.feature_count)),
            "model_input_count": MetadataValue.text(str(order.model_input_count)),
            "alpha158_count": MetadataValue.text(str(order.alpha158_count)),
            "dynamic_count": MetadataValue.text(str(order.dynamic_count)),
            "is_aligned": MetadataValue.bool(order.is_aligned),
            "alignment": MetadataValue.text(order.alignment_reason or "aligned"),
            "model_input_order_rule": MetadataValue.text(order.model_input_order_rule or "unresolved"),
            "alpha_source": MetadataValue.text(order.alpha158_source or "unresolved"),
            "anchor_parquet": text_or_null(order.dynamic_source),
            "model_input_order": MetadataValue.json(order.model_input_order or []),
            **access_metadata(access),
        },
    )


@asset(
    partitions_def=rd_task_partitions,
    group_name=GROUP,
    kinds={"python"},
    owners=OWNERS,
    code_version=CODE_VERSION,
    deps=[factor_order],
    description="Code of every SOTA factor (factors/<name>.py) and the anchor's factor_entry.py, ast-checked.",
)
def factor_code(last_sota_factor_exp: SotaFactorExperiment) -> Output[FactorCodeSet]:
    code = build_factor_code(last_sota_factor_exp)
    index = code.index
    return Output(
        code,
        metadata={
            "factor_count": MetadataValue.int(len(last_sota_factor_exp.sota_factors)),
            "code_files": MetadataValue.int(len(code.files)),
            "incomplete": MetadataValue.json(index.incomplete),
            "resolved_factor_entry_key": text_or_null(index.resolved_factor_entry_key),
            "factor_file_dict_keys": MetadataValue.json(index.factor_file_dict_keys),
        },
    )


def _latest_value(instance: DagsterInstance, asset_name: str, task_id: str, key: str) -> Any:
    """A metadata value of the latest materialization of ``asset_name`` for ``task_id`` (None if absent)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset_name), asset_partitions=[task_id]), limit=1
    ).records
    value = records[0].asset_materialization.metadata.get(key) if records else None
    return value.value if value is not None else None


def _extract_report(
    *,
    instance: DagsterInstance,
    rd_log_root: RdLogRoot,
    selection: SnapshotSelection,
    anchor: SotaFactorExperiment,
    weight: ModelWeight,
    model: ModelExport,
    order: FactorOrder,
    code: FactorCodeSet,
) -> ExtractReport:
    """The core's report (``extract.build_report``) fed with the access records this run's steps stored."""
    task_id = selection.task_id
    log_dir = rd_log_root.log_dir(task_id).resolve()
    access, missing = recorded_access(instance, task_id)
    if missing:
        raise WorkspaceTraversalError(
            f"access audit incomplete: no access record from {', '.join(missing)}", path=str(log_dir)
        )
    unpickled = sum(
        _latest_value(instance, name, task_id, META_UNPICKLED) or 0 for name in ("session_snapshot", "model_weight")
    )
    index_state = _latest_value(instance, "session_snapshot", task_id, META_INDEX) or "unknown"
    return build_report(
        log_dir=log_dir,
        selection=selection,
        anchor=anchor,
        access=access,
        path_map=rd_log_root.parsed_path_map(),
        order=order,
        model=model,
        weight=weight,
        code=code,
        run=ExtractRun(unpickled_snapshots=unpickled, index=str(index_state)),
    )


@asset(
    partitions_def=rd_task_partitions,
    group_name=GROUP,
    kinds={"python", "json"},
    owners=OWNERS,
    code_version=CODE_VERSION,
    description="The consumer bundle, assembled by the core and published atomically into the bundle store.",
)
def aistock_bundle(
    context: AssetExecutionContext,
    rd_log_root: RdLogRoot,
    bundle_store: BundleStore,
    session_snapshot: SnapshotSelection,
    last_sota_factor_exp: SotaFactorExperiment,
    model_weight: ModelWeight,
    factor_order: FactorOrder,
    factor_code: FactorCodeSet,
) -> Output[Manifest]:
    # Blocking checks normally stop the run before this step; re-asserting them here keeps a partial
    # re-materialization (e.g. this asset alone from the UI) from publishing what they would refuse.
    problems = weight_source_problems(model_weight, last_sota_factor_exp) + order_problems(factor_order)
    if problems:
        raise BlockingCheckError("; ".join(problems), path=session_snapshot.task_id)
    model = introspect_model(model_weight.data)
    report = _extract_report(
        instance=context.instance,
        rd_log_root=rd_log_root,
        selection=session_snapshot,
        anchor=last_sota_factor_exp,
        weight=model_weight,
        model=model,
        order=factor_order,
        code=factor_code,
    )
    content = assemble_bundle(
        selection=session_snapshot,
        anchor=last_sota_factor_exp,
        weight=model_weight,
        model=model,
        factor_order=factor_order,
        factor_code=factor_code,
        model_meta=build_model_meta(last_sota_factor_exp, model=model.introspection),
        report=report,
    )
    published = publish_bundle(bundle_store.path, content, keep_versions=bundle_store.keep_versions)
    fingerprint = selection_fingerprint(session_snapshot).token
    bundle_store.record_publication(
        task_id=content.task_id,
        fingerprint=fingerprint,
        content_hash=published.content_hash,
        version_dir=published.version_dir,
        run_id=context.run.run_id,
    )
    manifest = content.manifest
    return Output(
        manifest,
        metadata={
            "bundle_path": MetadataValue.path(str(published.bundle_path)),
            "version_dir": MetadataValue.path(str(published.version_dir)),
            "content_hash": MetadataValue.text(published.content_hash),
            "changed": MetadataValue.bool(published.changed),
            "selection_ready": MetadataValue.bool(manifest.selection_ready),
            "reasons": MetadataValue.json(manifest.reasons),
            "warnings": MetadataValue.json(manifest.warnings),
            "files": MetadataValue.int(len(manifest.files)),
            "session_fingerprint": MetadataValue.text(fingerprint),
            "anchor_hist_index": MetadataValue.int(last_sota_factor_exp.last_sota_factor_index),
            "weight_key": MetadataValue.text(model_weight.info.resolved_model_weight_key),
        },
    )


rd_task_assets = with_source_code_references(
    [session_snapshot, last_sota_factor_exp, model_weight, factor_order, factor_code, aistock_bundle]
)

rd_task_job = define_asset_job(
    "rd_task_job",
    selection=AssetSelection.assets(*rd_task_assets),
    description="Materialize one task's six assets and their checks (requested by the sensor and the schedule).",
)
