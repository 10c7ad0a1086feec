"""Typed materialization metadata: what a person reads in the UI about each stage of one task.

Counts are ints, flags are bools, absent values are null (never the strings "none" or "unknown"), lists are
JSON. Every string comes from an untrusted pickle or path, so it is made UTF-8 encodable first (a lone
surrogate would otherwise fail the event write). Each stage that touches the log dir or the workspace also
lists what it opened and listed, so the audit is readable per asset.
"""

from __future__ import annotations

from typing import Any

from dagster import MetadataValue

from rd_assets.core.artifacts.factor_code import FactorCodeSet
from rd_assets.core.bundle.extract import AnchorStage, ExtractOutcome, OrderStage, SessionStage, WeightStage
from rd_assets.core.contracts.models import SotaFactorExperiment
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.text_safety import encodable, escape_surrogates

META_OPENED = "paths_opened"
META_LISTED = "paths_listed"


def text_or_null(value: str | None) -> MetadataValue:
    """Typed metadata: an absent value is null in the UI and the API, never the string "none"."""
    return MetadataValue.null() if value is None else MetadataValue.text(escape_surrogates(value))


def int_or_null(value: int | None) -> MetadataValue:
    return MetadataValue.null() if value is None else MetadataValue.int(value)


def json_value(data: Any) -> MetadataValue:
    return MetadataValue.json(encodable(data))


class StageAccess:
    """Slices one extraction's :class:`AccessLog` into what each stage touched."""

    def __init__(self, access: AccessLog) -> None:
        self.access = access
        self._opened = 0
        self._listed = 0

    def take(self) -> dict[str, MetadataValue]:
        """What was opened and listed since the previous call."""
        opened, listed = self.access.opened_paths[self._opened :], self.access.listed_paths[self._listed :]
        self._opened += len(opened)
        self._listed += len(listed)
        return {META_OPENED: json_value(sorted(set(opened))), META_LISTED: json_value(sorted(set(listed)))}


def session_metadata(stage: SessionStage, fingerprint: str) -> dict[str, MetadataValue]:
    sel, error = stage.selection, stage.anchor_error
    return {
        "chosen_snapshot": text_or_null(sel.chosen_snapshot),
        "hist_len": MetadataValue.int(sel.hist_len),
        "candidates": MetadataValue.int(len(sel.candidates)),
        "skipped": MetadataValue.int(sel.skipped),
        "tied_snapshots": json_value(sel.tied_snapshots),
        "file_format": text_or_null(sel.file_format),
        "signature": text_or_null(sel.signature),
        "loop_class": text_or_null(sel.loop_class),
        "session_fingerprint": MetadataValue.text(fingerprint),
        "anchor_error": text_or_null(f"{error.code}: {error.message}" if error else None),
        "unpickled_snapshots": MetadataValue.int(stage.unpickled),
        "snapshot_index": MetadataValue.text(stage.index_state),
    }


def anchor_metadata(stage: AnchorStage) -> dict[str, MetadataValue]:
    anchor = stage.anchor
    names = [f.name for f in anchor.sota_factors]
    return {
        "anchor_hist_index": MetadataValue.int(anchor.last_sota_factor_index),
        "hist_len": MetadataValue.int(anchor.hist_len),
        "anchor_class_path": text_or_null(anchor.anchor_class_path),
        "factor_count": MetadataValue.int(len(names)),
        "factor_names": json_value(names),
        "task_run_id": text_or_null(anchor.task_run_id),
        "workspace_path": text_or_null(anchor.experiment_workspace_path),
    }


def weight_metadata(stage: WeightStage) -> dict[str, MetadataValue]:
    """A weight is always present here: without one the extraction stopped before this stage was yielded."""
    assert stage.weight is not None
    info = stage.weight.info
    model = stage.model.introspection if stage.model is not None else None
    return {
        "weight_key": text_or_null(info.resolved_model_weight_key),
        "weight_source": text_or_null(info.resolved_model_weight_source),
        "weight_size": MetadataValue.int(info.size),
        "weight_sha256": MetadataValue.text(info.sha256),
        "weight_location": text_or_null(info.location),
        "anchor_hist_index": MetadataValue.int(info.hist_index),
        "model_kind": text_or_null(model.kind if model else None),
        "model_class": text_or_null(model.class_path if model else None),
        "model_feature_count": int_or_null(model.feature_count if model else None),
        "unpickled_snapshots": MetadataValue.int(stage.unpickled),
    }


def order_metadata(stage: OrderStage, weight: WeightStage) -> dict[str, MetadataValue]:
    order = stage.order
    model = weight.model.introspection if weight.model is not None else None
    return {
        "config_name": text_or_null(order.config_name),
        "model_class": text_or_null(model.class_path if model else None),
        "model_kind": text_or_null(model.kind if model else None),
        "model_feature_count": int_or_null(order.model_feature_count),
        "model_input_count": int_or_null(order.model_input_count),
        "alpha158_count": int_or_null(order.alpha158_count),
        "dynamic_count": int_or_null(order.dynamic_count),
        "is_aligned": MetadataValue.bool(order.is_aligned),
        "alignment_reason": text_or_null(order.alignment_reason),
        "model_input_order_rule": text_or_null(order.model_input_order_rule),
        "alpha_source": text_or_null(order.alpha158_source),
        "anchor_parquet": text_or_null(order.dynamic_source),
        "model_input_order": json_value(order.model_input_order),
    }


def code_metadata(code: FactorCodeSet, anchor: SotaFactorExperiment) -> dict[str, MetadataValue]:
    index = code.index
    return {
        "factor_count": MetadataValue.int(len(anchor.sota_factors)),
        "code_files": MetadataValue.int(len(code.files)),
        "incomplete": json_value(index.incomplete),
        "resolved_factor_entry_key": text_or_null(index.resolved_factor_entry_key),
        "factor_file_dict_keys": json_value(index.factor_file_dict_keys),
    }


def bundle_metadata(outcome: ExtractOutcome, fingerprint: str) -> dict[str, MetadataValue]:
    manifest, published = outcome.content.manifest, outcome.publish
    anchor = manifest.sota_factor_anchor
    return {
        "bundle_path": MetadataValue.path(str(published.bundle_path)),
        "version_dir": MetadataValue.path(str(published.version_dir)),
        "content_hash": MetadataValue.text(published.content_hash),
        "changed": MetadataValue.bool(published.changed),
        "selection_ready": MetadataValue.bool(manifest.selection_ready),
        "reasons": json_value(manifest.reasons),
        "warnings": json_value(manifest.warnings),
        "files": MetadataValue.int(len(manifest.files)),
        "session_fingerprint": MetadataValue.text(fingerprint),
        "anchor_hist_index": MetadataValue.int(anchor.last_sota_factor_index),
        "weight_key": text_or_null(anchor.resolved_model_weight_key),
    }
