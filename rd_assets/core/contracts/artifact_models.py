"""Contracts of the artifacts extracted from the anchor experiment: weight, model, order, code, meta.

They are the values of the Dagster assets ``model_weight`` .. ``factor_code`` and the pieces a bundle is
assembled from (see :mod:`rd_assets.core.contracts.bundle_models` for the bundle documents themselves).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rd_assets.core.contracts.models import Contract, Document


class ModelWeightInfo(Contract):
    """Where the weight bytes came from; the bytes themselves travel beside this, never inside JSON."""

    resolved_model_weight_key: Literal["model.pkl", "params.pkl"]
    resolved_model_weight_source: Literal["factor_exp"] = "factor_exp"
    hist_index: int
    sub_workspace_index: int
    size: int
    sha256: str
    location: str = Field(description="e.g. trace.hist[3][0].sub_workspace_list[0].file_dict['model.pkl']")


class TensorSpec(Contract):
    """One ``state_dict`` entry of a torch network, as stored in ``model.safetensors``."""

    name: str = Field(description="the load_state_dict key, e.g. input_layer.weight")
    dtype: Literal["F64", "F32", "F16", "I64", "I32", "I16", "I8", "U8", "BOOL"]
    shape: list[int]


class ModelIntrospection(Contract):
    """What the restricted unpickler could learn about the model without importing qlib/lightgbm/torch."""

    class_path: str | None
    kind: Literal["lightgbm", "torch", "other", "unreadable"]
    feature_count: int | None
    feature_count_reason: str | None = Field(None, description="why feature_count is null")
    feature_names: list[str] | None = None
    objective: str | None = None
    num_trees: int | None = None
    model_txt_sha256: str | None = None
    network_class: str | None = Field(None, description="torch: the nn.Module's class path, e.g. model.Net")
    first_layer_key: str | None = Field(None, description="torch: the 2-D weight feature_count is read from")
    first_layer_shape: list[int] | None = None
    tensors: list[TensorSpec] | None = Field(None, description="torch: the state_dict in order")
    wrapper_kwargs: dict[str, Any] | None = Field(
        None, description="torch: the qlib wrapper's plain-data attributes (pt_model_kwargs, lr, n_epochs ...)"
    )
    safetensors_sha256: str | None = None


class FactorOrder(Document):
    """The authoritative input order of the model, built from the alpha and dynamic names by the loader's rule."""

    task_id: str
    config_name: str | None = Field(description="the qlib config the anchor ran")
    config_reason: str
    alpha158_factors: list[str] | None
    alpha158_source: str | None = Field(None, description="where in the session the alpha names were read")
    alpha158_source_kind: Literal["config", "base_features"] | None = Field(
        None, description="config: literal in the executed YAML; base_features: the anchor's pickled dict"
    )
    alpha158_unresolved_reason: str | None = None
    dynamic_factors: list[str] | None
    dynamic_source: str | None = Field(None, description="the parquet path read (footer only)")
    dynamic_unresolved_reason: str | None = None
    model_input_order: list[str] | None
    model_input_order_rule: Literal["alpha_then_parquet", "sorted_union", "alpha_only"] | None = Field(
        None, description="how the executed config's data loader orders the columns"
    )
    model_input_order_rule_reason: str | None = None
    alpha158_count: int | None
    dynamic_count: int | None
    model_input_count: int | None
    model_feature_count: int | None
    is_aligned: bool
    alignment_reason: str | None = None
    unresolved_code: str | None = Field(None, description="typed error code when the order is not aligned")
    warnings: list[str] = Field(default_factory=list, description="'code: why' notes that do not block readiness")
    # The selection system's names for the same facts (its sync code reads factor_order.json["factor_order"]).
    # Filled when the bundle is assembled (1.2); null in the Dagster asset value and in 1.1 bundles.
    factor_order: list[str] | None = Field(None, description="selection-system name of model_input_order (equal)")
    dynamic_factor_count: int | None = Field(None, description="selection-system name of dynamic_count (equal)")
    source_file: str | None = Field(
        None, description="file name the dynamic factor names were read from (combined_factors_df.parquet)"
    )
    task_run_id: str | None = Field(None, description="the run id the fork's loop carries (= manifest.task_run_id)")
    loop_id: int | None = Field(
        None, description="loop folder of the chosen session snapshot (= manifest.session_anchor.loop_idx)"
    )


class FactorCodeFile(Contract):
    name: str
    relpath: str | None = Field(description="factors/<safe name>.py inside the bundle; null when there is no code")
    file_dict_key: str = Field(description="the key consumers use: factor.py, based_factor_{i}/factor.py")
    sha256: str | None
    defines_function: bool
    missing_reason: str | None = Field(None, description="why the code is absent or defines no function for it")


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
    incomplete: list[str] = Field(
        description="'<factor name>: <reason>' for each factor (or factor_entry.py) without code defining its function"
    )


class ModelMeta(Document):
    task_id: str
    config_name: str | None
    config_reason: str | None = Field(None, description="why this config is the executed one (rule and evidence)")
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
    network_class: str | None = Field(None, description="torch: the network class the weight holds (e.g. model.Net)")
    trained_model_kwargs: dict[str, Any] | None = Field(
        None, description="torch: the qlib wrapper's plain-data attributes as trained (the template's are Jinja)"
    )
    model_py_source: str | None = Field(None, description="where the published model.py was found in the session")
