"""The product owner's rules, re-verified on what an extraction resolved: each returns its problems (empty = holds).

The extraction itself already refuses what breaks a rule; these functions re-derive each rule independently
from the resolved parts, so a regression in the resolver cannot slip through unnoticed. Dagster reports every
one as an asset check and, for the blocking ones, stops with the typed error of ``require_*``; the extraction
raises the same errors. Each problem is one sentence naming the file or value and the cause.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from rd_assets.core.artifacts.factor_order import require_aligned
from rd_assets.core.bundle.store import current_version_dir
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.artifact_models import FactorOrder
from rd_assets.core.contracts.bundle_models import Manifest, VerifyReport
from rd_assets.core.contracts.models import ErrorInfo, SotaFactorExperiment
from rd_assets.core.errors import FeatureCountMismatchError, RdAssetsError, WorkspaceTraversalError
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.snapshots import SESSION_DIR
from rd_assets.core.trace.experiments import FACTOR_EXPERIMENT_CLASSES

if TYPE_CHECKING:  # annotations only: the verifier side stays free of numpy and the unpickler
    from rd_assets.core.artifacts.factor_code import FactorCodeSet
    from rd_assets.core.artifacts.weights import ModelWeight


class WeightSourceError(RdAssetsError):
    """A resolved weight does not sit where rule 3 says it must (the resolver should have refused it)."""

    code = "weight_source_not_factor_exp"


def weight_source_problems(
    weight: ModelWeight | None, anchor: SotaFactorExperiment, error: ErrorInfo | None = None
) -> list[str]:
    """Rule 3: the weight bytes come from the anchor's ``sub_workspace_list[*].file_dict``, where they claim to."""
    if weight is None:
        return [f"{error.code}: {error.message}" if error else "no model weight was resolved"]
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


def require_weight_source(weight: ModelWeight, anchor: SotaFactorExperiment) -> None:
    problems = weight_source_problems(weight, anchor)
    if problems:
        raise WeightSourceError("; ".join(problems), path=weight.info.location)


def traversal_problems(access: AccessLog, log_dir: Path, order: FactorOrder) -> list[str]:
    """Rule 5: only ``__session__`` files and the single anchor parquet (footer only) were touched."""
    allowed = {order.dynamic_source} if order.dynamic_source else set()
    problems = [f"touched outside {SESSION_DIR}: {p}" for p in access.violations(log_dir, allowed)]
    if order.dynamic_source and order.dynamic_source in access.listed_paths:
        problems.append(f"the anchor parquet was listed as a directory: {order.dynamic_source}")
    return problems


def require_no_traversal(access: AccessLog, log_dir: Path, order: FactorOrder) -> None:
    problems = traversal_problems(access, log_dir, order)
    if problems:
        raise WorkspaceTraversalError("; ".join(problems), path=str(log_dir))


def order_problems(order: FactorOrder) -> list[str]:
    """``model_input_order`` is resolved and has exactly the model's feature count (nothing padded or cut)."""
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


def require_order_matches(order: FactorOrder) -> None:
    """Raise the order's own typed error (which gap), or a mismatch naming both counts."""
    require_aligned(order)
    problems = order_problems(order)
    if problems:
        raise FeatureCountMismatchError("; ".join(problems), path=order.dynamic_source)


def factor_code_problems(code: FactorCodeSet, anchor: SotaFactorExperiment) -> list[str]:
    """Every SOTA factor has a code file in the bundle that defines its function."""
    index = code.index
    covered = {f.name for f in index.files if f.defines_function and f.relpath in code.files}
    problems = [f"{name}: no code defining its function" for name in index.incomplete]
    problems += [
        f"{f.name}: no code file in the bundle"
        for f in anchor.sota_factors
        if f.name not in covered and f.name not in index.incomplete
    ]
    return problems


def integrity_problems(store: Path, task_id: str, published: Manifest) -> tuple[list[str], VerifyReport | None]:
    """The current bundle of ``task_id`` re-hashes to its manifest and is the one just published."""
    if current_version_dir(store, task_id) is None:
        return [f"no published bundle at {store / task_id}"], None
    report = verify_bundle(store / task_id)
    problems = list(report.problems)
    if report.content_hash != published.content_hash:
        problems.append(
            f"the current bundle's content hash {report.content_hash} is not the one this run published "
            f"({published.content_hash})"
        )
    return problems, report
