"""Per-partition asset checks: the product owner's rules, re-verified on what each asset produced.

Blocking checks stop the chain before ``aistock_bundle``, so a weight of the wrong origin, a run that
touched the workspace, or a misaligned feature order never reaches the store. Every failed check says why
in its metadata. ``model_weight_source_is_factor_exp`` is evaluated inside the ``model_weight`` step (a
task without weights has no value to check afterwards, and must still record a failed check); the other
checks are separate steps that read the stored asset values.
"""

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetIn,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    MetadataValue,
    asset_check,
)

from rd_assets.core.artifacts.factor_code import FactorCodeSet
from rd_assets.core.artifacts.weights import ModelWeight
from rd_assets.core.bundle.store import current_version_dir
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.artifact_models import FactorOrder
from rd_assets.core.contracts.bundle_models import Manifest
from rd_assets.core.contracts.models import SotaFactorExperiment
from rd_assets.core.errors import RdAssetsError
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.trace.experiments import FACTOR_EXPERIMENT_CLASSES
from rd_assets.defs.partitions import rd_task_partitions
from rd_assets.defs.resources import BundleStore, RdLogRoot

WEIGHT_SOURCE_CHECK = "model_weight_source_is_factor_exp"
NO_TRAVERSAL_CHECK = "no_workspace_traversal"
ORDER_CHECK = "factor_order_matches_model"
CODE_CHECK = "factor_code_complete"
BUNDLE_CHECK = "bundle_integrity"

ACCESS_RECORDING_ASSETS = ("session_snapshot", "last_sota_factor_exp", "model_weight", "factor_order")
"""The assets that touch the log dir or the workspace; each records its AccessLog in its metadata."""
META_OPENED = "paths_opened"
META_LISTED = "paths_listed"

weight_source_spec = AssetCheckSpec(
    WEIGHT_SOURCE_CHECK,
    asset="model_weight",
    partitions_def=rd_task_partitions,
    blocking=True,
    description="the weight bytes come from the anchor factor experiment's sub_workspace_list[*].file_dict",
)


def text_or_null(value: str | None) -> MetadataValue:
    """Typed metadata: an absent value is null in the UI and the API, never the string "none"."""
    return MetadataValue.null() if value is None else MetadataValue.text(value)


def access_metadata(access: AccessLog) -> dict[str, MetadataValue]:
    """What a step touched, for people (UI) and for the ``no_workspace_traversal`` check."""
    return {
        META_OPENED: MetadataValue.json(sorted(set(access.opened_paths))),
        META_LISTED: MetadataValue.json(sorted(set(access.listed_paths))),
    }


def _failed(reasons: list[str], **metadata: Any) -> dict[str, Any]:
    return {"passed": not reasons, "metadata": {"reasons": MetadataValue.json(reasons), **metadata}}


def weight_source_problems(weight: ModelWeight, anchor: SotaFactorExperiment) -> list[str]:
    """Independent re-derivation of rule 3 from the trace summary: the weight sits where it claims to."""
    info = weight.info
    problems = []
    if info.resolved_model_weight_source != "factor_exp":
        problems.append(f"weight source is {info.resolved_model_weight_source!r}, not 'factor_exp'")
    if anchor.anchor_class_path not in FACTOR_EXPERIMENT_CLASSES:
        problems.append(f"the anchor {anchor.anchor_class_path!r} is not a qlib factor experiment")
    if info.hist_index != anchor.last_sota_factor_index:
        problems.append(
            f"weight from trace.hist[{info.hist_index}] but the anchor is trace.hist[{anchor.last_sota_factor_index}]"
        )
    subs = {s.index: s for s in anchor.sub_workspaces}
    sub = subs.get(info.sub_workspace_index)
    if sub is None or info.resolved_model_weight_key not in sub.file_dict_keys:
        problems.append(
            f"sub_workspace_list[{info.sub_workspace_index}] of the anchor has no "
            f"{info.resolved_model_weight_key!r} in its file_dict"
        )
    expected = (
        f"trace.hist[{anchor.last_sota_factor_index}][0].sub_workspace_list[{info.sub_workspace_index}]"
        f".file_dict[{info.resolved_model_weight_key!r}]"
    )
    if info.location != expected:
        problems.append(f"weight location {info.location!r} is not {expected!r}")
    if info.size != len(weight.data) or info.sha256 != hashlib.sha256(weight.data).hexdigest():
        problems.append(f"the weight bytes ({len(weight.data)}) do not match the recorded size/sha256")
    return problems


def weight_source_result(
    weight: ModelWeight | None, anchor: SotaFactorExperiment, error: RdAssetsError | None = None
) -> AssetCheckResult:
    if weight is None:
        reason = f"{error.code}: {error.message}" if error else "no model weight was resolved"
        return AssetCheckResult(check_name=WEIGHT_SOURCE_CHECK, asset_key="model_weight", **_failed([reason]))
    return AssetCheckResult(
        check_name=WEIGHT_SOURCE_CHECK,
        asset_key="model_weight",
        **_failed(weight_source_problems(weight, anchor), location=MetadataValue.text(weight.info.location)),
    )


def _json_list(metadata: Mapping[str, Any], key: str) -> list[str]:
    value = metadata.get(key)
    data = getattr(value, "data", None)
    return [str(p) for p in data] if isinstance(data, list) else []


def recorded_access(instance: DagsterInstance, task_id: str) -> tuple[AccessLog, list[str]]:
    """The union of the access records of the latest materializations of the touching assets.

    Returns the combined log and the assets that have no materialization carrying a record.
    """
    combined = AccessLog()
    missing = []
    for name in ACCESS_RECORDING_ASSETS:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(name), asset_partitions=[task_id]), limit=1
        ).records
        mat = records[0].asset_materialization if records else None
        if mat is None or META_OPENED not in mat.metadata:
            missing.append(name)
            continue
        combined.opened_paths.extend(_json_list(mat.metadata, META_OPENED))
        combined.listed_paths.extend(_json_list(mat.metadata, META_LISTED))
    return combined, missing


def traversal_problems(access: AccessLog, log_dir: Path, order: FactorOrder) -> list[str]:
    """Rule 5: only ``__session__`` files and the single anchor parquet (footer only) were touched."""
    allowed = {order.dynamic_source} if order.dynamic_source else set()
    problems = [f"touched outside __session__: {p}" for p in access.violations(log_dir, allowed)]
    if order.dynamic_source and order.dynamic_source in access.listed_paths:
        problems.append(f"the anchor parquet was listed as a directory: {order.dynamic_source}")
    return problems


@asset_check(
    asset="factor_order",
    name=NO_TRAVERSAL_CHECK,
    blocking=True,
    partitions_def=rd_task_partitions,
    description="the run touched only __session__ files and the one anchor parquet (read footer-only)",
)
def no_workspace_traversal(
    context: AssetCheckExecutionContext, rd_log_root: RdLogRoot, factor_order: FactorOrder
) -> AssetCheckResult:
    task_id = context.partition_key
    access, missing = recorded_access(context.instance, task_id)
    problems = [f"{name} has no recorded access log (materialize the chain for this task)" for name in missing]
    problems += traversal_problems(access, rd_log_root.log_dir(task_id).resolve(), factor_order)
    return AssetCheckResult(
        **_failed(
            problems,
            opened=MetadataValue.int(len(set(access.opened_paths))),
            listed=MetadataValue.int(len(set(access.listed_paths))),
            anchor_parquet=text_or_null(factor_order.dynamic_source),
        )
    )


def order_problems(order: FactorOrder) -> list[str]:
    if order.model_input_order is None:
        reasons = [r for r in (order.alpha158_unresolved_reason, order.dynamic_unresolved_reason) if r]
        return [f"model_input_order unresolved: {'; '.join(reasons) or order.alignment_reason or 'no reason given'}"]
    if order.model_feature_count is None:
        return [f"the model's feature count is unknown: {order.alignment_reason or 'no reason given'}"]
    problems = []
    if len(order.model_input_order) != order.model_feature_count:
        problems.append(
            f"model_input_order has {len(order.model_input_order)} names but the model takes "
            f"{order.model_feature_count} features"
        )
    if not order.is_aligned:
        problems.append(f"factor_order.is_aligned is false: {order.alignment_reason or 'no reason given'}")
    return problems


@asset_check(
    asset="factor_order",
    name=ORDER_CHECK,
    blocking=True,
    partitions_def=rd_task_partitions,
    description="len(model_input_order) equals the model's feature count (nothing padded or cut)",
)
def factor_order_matches_model(factor_order: FactorOrder) -> AssetCheckResult:
    return AssetCheckResult(
        **_failed(
            order_problems(factor_order),
            model_input_count=MetadataValue.int(len(factor_order.model_input_order or [])),
            model_feature_count=MetadataValue.text(str(factor_order.model_feature_count)),
        )
    )


@asset_check(
    asset="factor_code",
    name=CODE_CHECK,
    partitions_def=rd_task_partitions,
    additional_ins={"last_sota_factor_exp": AssetIn("last_sota_factor_exp")},
    description="every SOTA factor has code defining calculate_<name> (or <name>)",
)
def factor_code_complete(factor_code: FactorCodeSet, last_sota_factor_exp: SotaFactorExperiment) -> AssetCheckResult:
    index = factor_code.index
    covered = {f.name for f in index.files if f.defines_function and f.relpath in factor_code.files}
    problems = [f"{name}: no code defining its function" for name in index.incomplete]
    problems += [
        f"{f.name}: no code file in the bundle"
        for f in last_sota_factor_exp.sota_factors
        if f.name not in covered and f.name not in index.incomplete
    ]
    return AssetCheckResult(
        severity=AssetCheckSeverity.WARN,
        **_failed(problems, factors=MetadataValue.int(len(last_sota_factor_exp.sota_factors))),
    )


def bundle_integrity_result(store: Path, task_id: str, published: Manifest) -> AssetCheckResult:
    """Re-hash the current bundle of ``task_id`` and compare it with what this run published."""
    version = current_version_dir(store, task_id)
    if version is None:
        return AssetCheckResult(**_failed([f"no published bundle at {store / task_id}"]))
    report = verify_bundle(store / task_id)
    problems = list(report.problems)
    if report.content_hash != published.content_hash:
        problems.append(
            f"the current bundle's content hash {report.content_hash} is not the one this run published "
            f"({published.content_hash})"
        )
    return AssetCheckResult(
        severity=AssetCheckSeverity.ERROR,
        **_failed(
            problems,
            version_dir=MetadataValue.path(str(version)),
            checked_files=MetadataValue.int(report.checked_files),
            content_hash=MetadataValue.text(str(report.content_hash)),
        ),
    )


@asset_check(
    asset="aistock_bundle",
    name=BUNDLE_CHECK,
    partitions_def=rd_task_partitions,
    description="the published bundle re-hashes to its manifest and every JSON validates (core.bundle.verify)",
)
def bundle_integrity(
    context: AssetCheckExecutionContext, bundle_store: BundleStore, aistock_bundle: Manifest
) -> AssetCheckResult:
    return bundle_integrity_result(bundle_store.path, context.partition_key, aistock_bundle)
