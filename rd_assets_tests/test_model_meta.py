"""model_meta comes from the executed YAML only; placeholders stay visible; broken YAML is a reason."""

from __future__ import annotations

from rd_assets.model_meta import build_model_meta
from rd_assets.reader import read_task
from rd_assets.snapshot_index import SnapshotIndex
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec, default_yaml_files
from rd_assets_tests.test_factor_order import LGB, SAMPLE_TASKS, SAMPLES, SOTA_MODEL_HIST, anchor_of


def test_quant_sample_meta_is_the_dynamic_lightgbm_config() -> None:
    anchor = read_task(SAMPLES / "log" / SAMPLE_TASKS[1], index=SnapshotIndex(None)).anchor
    assert anchor is not None
    meta = build_model_meta(anchor, weight_class_path=LGB)

    assert meta.config_name == "conf_combined_factors_dynamic.yaml"
    assert "overridden" in (meta.config_reason or "")
    assert (meta.model_class, meta.model_module) == ("LGBModel", "qlib.contrib.model.gbdt")
    assert meta.model_kwargs is not None and meta.model_kwargs["num_leaves"] == 210
    assert meta.dataset_class == "qlib.data.dataset.DatasetH"
    assert meta.dataset_segments == {
        "train": ["2008-01-01", "2014-12-31"],
        "valid": ["2015-01-01", "2016-12-31"],
        "test": ["2017-01-01", "2020-08-01"],
    }
    assert meta.handler_class == "qlib.data.dataset.handler.DataHandlerLP"
    assert meta.handler_kwargs == {"start_time": "2008-01-01", "end_time": "2020-08-01", "instruments": "csi300"}
    assert meta.loader_class == "rdagent.scenarios.qlib.experiment.custom_loaders.CombinedAlpha158DynamicFactorsLoader"
    assert meta.loader_kwargs is not None and meta.loader_kwargs["dynamic_path"] == "combined_factors_df.parquet"
    assert [p["class"] for p in meta.infer_processors or []] == ["RobustZScoreNorm", "Fillna"]
    assert [p["class"] for p in meta.learn_processors or []] == ["DropnaLabel", "CSZScoreNorm"]
    assert meta.label == [["Ref($close, -2)/Ref($close, -1) - 1"], ["LABEL0"]]
    assert meta.weight_class_path == LGB
    assert meta.model_dump_json()  # JSON-safe (dates became strings)


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
    meta = build_model_meta(anchor_of(hist), weight_class_path=LGB)
    assert meta.config_name == "conf_combined_factors_dynamic.yaml"
    assert meta.model_kwargs is not None and meta.model_kwargs["num_leaves"] == 99


def test_unrendered_template_keeps_placeholders_visible() -> None:
    meta = build_model_meta(anchor_of(SOTA_MODEL_HIST), weight_class_path=None)
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
    broken = build_model_meta(anchor_of(hist), weight_class_path=None)
    assert broken.config_name == "conf_combined_factors_dynamic.yaml"
    assert "does not parse" in (broken.config_unresolved_reason or "")
    assert broken.model_class is None

    only_readme = [ExperimentSpec(factors=[FactorSpec("A_5D")], yaml_files={"README.md": "x"})]
    missing = build_model_meta(anchor_of(only_readme), weight_class_path=LGB)
    assert missing.config_name == "conf_baseline.yaml"
    assert "not in experiment_workspace.file_dict" in (missing.config_unresolved_reason or "")
