"""model_meta comes from the executed YAML only; placeholders stay visible; broken YAML is a reason."""

from __future__ import annotations

from rd_assets.core.artifacts.model_meta import build_model_meta
from rd_assets.core.contracts.artifact_models import ModelIntrospection
from rd_assets.core.contracts.models import SotaFactorExperiment
from rd_assets.core.samples import FIRST_ANCHOR_TASK, SIGNED_TASK
from rd_assets_tests.bundle_testkit import sample_parts
from rd_assets_tests.conftest import expected_for
from rd_assets_tests.core.artifacts.test_factor_order import LGB, SOTA_MODEL_HIST, anchor_of
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec, default_yaml_files

LGB_MODEL = ModelIntrospection(class_path=LGB, kind="lightgbm", feature_count=22)


def _sample(task_id: str) -> tuple[SotaFactorExperiment, ModelIntrospection]:
    parts = sample_parts(task_id)
    assert parts.model is not None
    return parts.anchor, parts.model.introspection


def test_first_anchor_sample_meta_is_the_forks_dynamic_lightgbm_config() -> None:
    expected = expected_for(FIRST_ANCHOR_TASK)
    anchor, model = _sample(FIRST_ANCHOR_TASK)
    meta = build_model_meta(anchor, model=model)

    assert meta.config_name == expected["executed_config"] == "conf_combined_factors_dynamic.yaml"
    assert (meta.model_class, meta.model_module) == ("LGBModel", "qlib.contrib.model.gbdt")
    assert meta.model_kwargs == expected["model_kwargs"]
    assert meta.dataset_class == "qlib.data.dataset.DatasetH"
    assert set(meta.dataset_segments or {}) == {"train", "valid", "test"}
    assert meta.loader_class == "rdagent.scenarios.qlib.experiment.custom_loaders.CombinedAlpha158DynamicFactorsLoader"
    assert meta.loader_kwargs is not None and meta.loader_kwargs["dynamic_path"] == "combined_factors_df.parquet"
    assert meta.label == [["Ref($close, -2)/Ref($close, -1) - 1"], ["LABEL0"]]
    assert meta.weight_class_path == expected["model_class"] == LGB
    assert meta.network_class is None and meta.trained_model_kwargs is None
    assert meta.model_dump_json()  # JSON-safe (dates became strings)


def test_torch_sample_meta_names_the_network_and_the_kwargs_it_was_trained_with() -> None:
    expected = expected_for(SIGNED_TASK)
    anchor, model = _sample(SIGNED_TASK)
    meta = build_model_meta(anchor, model=model)
    assert meta.config_name == expected["executed_config"]
    assert (meta.model_class, meta.model_module) == ("GeneralPTNN", "qlib.contrib.model.pytorch_general_nn")
    assert meta.loader_class == "NestedDataLoader"
    assert meta.network_class == expected["model_network_class"] == "model.Net"
    assert meta.model_py_source == "trace.hist[3][0].experiment_workspace.file_dict['model.py']"
    trained = meta.trained_model_kwargs or {}
    for key in ("n_epochs", "lr", "early_stop", "batch_size", "weight_decay", "pt_model_uri", "pt_model_kwargs"):
        assert trained[key] == expected["model_kwargs"][key], key


def test_values_come_from_the_executed_config_not_another_template() -> None:
    files = default_yaml_files()
    files["conf_baseline.yaml"] = files["conf_baseline.yaml"].replace("num_leaves: 210", "num_leaves: 7")
    files["conf_combined_factors_dynamic.yaml"] = files["conf_combined_factors_dynamic.yaml"].replace(
        "num_leaves: 210", "num_leaves: 99"
    )
    hist = [
        ExperimentSpec(factors=[FactorSpec("A_5D")]),
        ExperimentSpec(factors=[FactorSpec("B_5D")], yaml_files=files),
    ]
    meta = build_model_meta(anchor_of(hist), model=LGB_MODEL)
    assert meta.config_name == "conf_combined_factors_dynamic.yaml"
    assert meta.model_kwargs is not None and meta.model_kwargs["num_leaves"] == 99


def test_unrendered_template_keeps_placeholders_visible() -> None:
    meta = build_model_meta(anchor_of(SOTA_MODEL_HIST), model=None)
    assert meta.config_name == "conf_combined_factors_sota_model.yaml"
    assert meta.model_class == "GeneralPTNN"
    assert meta.model_kwargs == {"n_epochs": "{{ n_epochs }}"}
    assert meta.handler_kwargs == {
        "start_time": '{{ train_start | default("2008-01-01", true) }}',
        "end_time": '{{ test_end | default("null", true) }}',
    }
    assert meta.loader_class == "NestedDataLoader"


def test_unparseable_or_missing_config_is_a_reason() -> None:
    files = default_yaml_files()
    files["conf_combined_factors_dynamic.yaml"] = "task: [unclosed\n"
    hist = [
        ExperimentSpec(factors=[FactorSpec("A_5D")]),
        ExperimentSpec(factors=[FactorSpec("B_5D")], yaml_files=files),
    ]
    broken = build_model_meta(anchor_of(hist), model=None)
    assert broken.config_name == "conf_combined_factors_dynamic.yaml"
    assert "does not parse" in (broken.config_unresolved_reason or "")
    assert broken.model_class is None

    only_readme = [ExperimentSpec(factors=[FactorSpec("A_5D")], yaml_files={"README.md": "x"})]
    missing = build_model_meta(anchor_of(only_readme), model=LGB_MODEL)
    assert missing.config_name is None
    assert "not in experiment_workspace.file_dict" in (missing.config_unresolved_reason or "")
