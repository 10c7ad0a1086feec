"""The check results of one task: the core's rules (:mod:`rd_assets.core.bundle.rules`) wired to the check specs.

A check is reported only when it ran on what its asset produced; a check whose asset was never reached is
not reported at all (Dagster shows it as not executed, never as failed). Every failed check lists its
reasons in ``reasons``.
"""

from __future__ import annotations

from pathlib import Path

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from rd_assets.core.artifacts.factor_code import FactorCodeSet
from rd_assets.core.artifacts.weights import ModelWeight
from rd_assets.core.bundle import rules
from rd_assets.core.contracts.artifact_models import FactorOrder
from rd_assets.core.contracts.bundle_models import Manifest
from rd_assets.core.contracts.models import ErrorInfo, SotaFactorExperiment
from rd_assets.core.session.access_log import AccessLog
from rd_assets.defs.metadata import int_or_null, json_value, text_or_null
from rd_assets.defs.specs import (
    BUNDLE_INTEGRITY,
    CODE_COMPLETE,
    NO_TRAVERSAL,
    ORDER_MATCHES_MODEL,
    SELECTION_READY,
    WEIGHT_SOURCE,
)


def _result(
    spec: AssetCheckSpec,
    problems: list[str],
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
    **metadata: MetadataValue,
) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=spec.asset_key,
        check_name=spec.name,
        passed=not problems,
        severity=severity,
        metadata={"reasons": json_value(problems), **metadata},
    )


def weight_source(
    weight: ModelWeight | None, anchor: SotaFactorExperiment, error: ErrorInfo | None = None
) -> AssetCheckResult:
    location = text_or_null(weight.info.location if weight is not None else None)
    return _result(WEIGHT_SOURCE, rules.weight_source_problems(weight, anchor, error), location=location)


def no_traversal(access: AccessLog, log_dir: Path, order: FactorOrder) -> AssetCheckResult:
    return _result(
        NO_TRAVERSAL,
        rules.traversal_problems(access, log_dir, order),
        opened=MetadataValue.int(len(set(access.opened_paths))),
        listed=MetadataValue.int(len(set(access.listed_paths))),
        anchor_parquet=text_or_null(order.dynamic_source),
    )


def order_matches_model(order: FactorOrder) -> AssetCheckResult:
    return _result(
        ORDER_MATCHES_MODEL,
        rules.order_problems(order),
        model_input_count=int_or_null(order.model_input_count),
        model_feature_count=int_or_null(order.model_feature_count),
    )


def code_complete(code: FactorCodeSet, anchor: SotaFactorExperiment) -> AssetCheckResult:
    return _result(
        CODE_COMPLETE,
        rules.factor_code_problems(code, anchor),
        AssetCheckSeverity.WARN,
        factors=MetadataValue.int(len(anchor.sota_factors)),
    )


def bundle_integrity(store: Path, task_id: str, published: Manifest) -> AssetCheckResult:
    problems, report = rules.integrity_problems(store, task_id, published)
    return _result(
        BUNDLE_INTEGRITY,
        problems,
        version_dir=MetadataValue.null() if report is None else MetadataValue.path(str(report.version_dir)),
        checked_files=int_or_null(report.checked_files if report else None),
        content_hash=text_or_null(report.content_hash if report else None),
    )


def selection_ready(manifest: Manifest) -> AssetCheckResult:
    """Published but not ready is a warning naming each reason (the bundle is still the truth of the task)."""
    problems = [] if manifest.selection_ready else list(manifest.reasons) or ["selection_ready is false"]
    return _result(
        SELECTION_READY,
        problems,
        AssetCheckSeverity.WARN,
        selection_ready=MetadataValue.bool(manifest.selection_ready),
    )


def failed_blocking(results: list[AssetCheckResult]) -> bool:
    return any(not r.passed and r.severity == AssetCheckSeverity.ERROR for r in results)
