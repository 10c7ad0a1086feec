"""What the graph shows: the six assets of one RD-Agent task and their checks, as specs.

``session_snapshot -> last_sota_factor_exp -> model_weight -> factor_order -> factor_code -> aistock_bundle``,
each partitioned by task (:mod:`rd_assets.defs.partitions`). They are materialized together by one step
(:mod:`rd_assets.defs.rd_task_assets`), so the deps here are the lineage people read, not separate steps.
"""

from dagster import AssetCheckSpec, AssetKey, AssetSpec

from rd_assets import __version__
from rd_assets.core.contracts.models import SCHEMA_VERSION
from rd_assets.defs.partitions import rd_task_partitions

GROUP = "rd_task"
OWNERS = ["team:rd-assets"]
CODE_VERSION = f"{__version__}+schema{SCHEMA_VERSION}"
"""Changes when the package or its document contract does: Dagster then marks earlier materializations stale."""

SESSION_SNAPSHOT = AssetKey("session_snapshot")
LAST_SOTA_FACTOR_EXP = AssetKey("last_sota_factor_exp")
MODEL_WEIGHT = AssetKey("model_weight")
FACTOR_ORDER = AssetKey("factor_order")
FACTOR_CODE = AssetKey("factor_code")
AISTOCK_BUNDLE = AssetKey("aistock_bundle")
CHAIN = (SESSION_SNAPSHOT, LAST_SOTA_FACTOR_EXP, MODEL_WEIGHT, FACTOR_ORDER, FACTOR_CODE, AISTOCK_BUNDLE)
"""In the order the extraction resolves them (and each depends on the one before)."""

_DESCRIPTIONS = {
    SESSION_SNAPSHOT: "The session snapshot with the longest trace.hist, with every candidate for audit.",
    LAST_SOTA_FACTOR_EXP: "The last accepted qlib factor experiment in the chosen trace and its SOTA factor list.",
    MODEL_WEIGHT: "The anchor's model.pkl/params.pkl bytes, only from its sub_workspace_list[*].file_dict.",
    FACTOR_ORDER: "The model's input order: alpha names and the anchor parquet's columns (footer only), ordered "
    "by the executed config's data loader, compared with the model's feature count.",
    FACTOR_CODE: "Code of every SOTA factor (factors/<name>.py) and the anchor's factor_entry.py, ast-checked.",
    AISTOCK_BUNDLE: "The consumer bundle, assembled by the core and published atomically into the bundle store.",
}
_KINDS = {
    SESSION_SNAPSHOT: {"python", "pickle"},
    LAST_SOTA_FACTOR_EXP: {"python", "pydantic"},
    MODEL_WEIGHT: {"python", "pickle"},
    FACTOR_ORDER: {"python", "parquet", "yaml"},
    FACTOR_CODE: {"python"},
    AISTOCK_BUNDLE: {"python", "json"},
}

ASSET_SPECS = [
    AssetSpec(
        key,
        deps=[CHAIN[i - 1]] if i else [],
        description=_DESCRIPTIONS[key],
        kinds=_KINDS[key],
        owners=OWNERS,
        group_name=GROUP,
        code_version=CODE_VERSION,
        partitions_def=rd_task_partitions,
        skippable=True,  # a backfill batch records each task on its own partition, never one output for all
    )
    for i, key in enumerate(CHAIN)
]

WEIGHT_SOURCE = AssetCheckSpec(
    "model_weight_source_is_factor_exp",
    asset=MODEL_WEIGHT,
    blocking=True,
    partitions_def=rd_task_partitions,
    description="the weight bytes come from the anchor factor experiment's sub_workspace_list[*].file_dict",
)
NO_TRAVERSAL = AssetCheckSpec(
    "no_workspace_traversal",
    asset=FACTOR_ORDER,
    blocking=True,
    partitions_def=rd_task_partitions,
    description="the run touched only __session__ files and the one anchor parquet (read footer-only)",
)
ORDER_MATCHES_MODEL = AssetCheckSpec(
    "factor_order_matches_model",
    asset=FACTOR_ORDER,
    blocking=True,
    partitions_def=rd_task_partitions,
    description="len(model_input_order) equals the model's feature count (nothing padded or cut)",
)
CODE_COMPLETE = AssetCheckSpec(
    "factor_code_complete",
    asset=FACTOR_CODE,
    partitions_def=rd_task_partitions,
    description="every SOTA factor has code defining calculate_<name> (or <name>) (warning)",
)
BUNDLE_INTEGRITY = AssetCheckSpec(
    "bundle_integrity",
    asset=AISTOCK_BUNDLE,
    partitions_def=rd_task_partitions,
    description="the published bundle re-hashes to its manifest and every JSON validates (core.bundle.verify)",
)
SELECTION_READY = AssetCheckSpec(
    "selection_ready",
    asset=AISTOCK_BUNDLE,
    partitions_def=rd_task_partitions,
    description="the published bundle says selection_ready: true (warning with the reasons when it does not)",
)
CHECK_SPECS = [WEIGHT_SOURCE, NO_TRAVERSAL, ORDER_MATCHES_MODEL, CODE_COMPLETE, BUNDLE_INTEGRITY, SELECTION_READY]
