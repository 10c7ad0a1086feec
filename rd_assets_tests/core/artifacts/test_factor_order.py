"""Factor order: executed config, Alpha158 names from its YAML, dynamic names from the parquet footer only."""

from __future__ import annotations

import json
from pathlib import Path, PureWindowsPath

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rd_assets.core.artifacts.factor_order import ensure_aligned, require_aligned, resolve_factor_order
from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.artifacts.qlib_config import ConfigParseError, load_template_yaml
from rd_assets.core.contracts.artifact_models import FactorOrder
from rd_assets.core.contracts.models import SotaFactorExperiment
from rd_assets.core.errors import (
    AlphaNamesUnresolvedError,
    ConfigUnresolvedError,
    FactorParquetNotFoundError,
    FeatureCountMismatchError,
    UnknownDataLoaderError,
)
from rd_assets.core.samples import SAMPLE_TASKS, SAMPLES_DIR, SIGNED_TASK
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.task_reader import read_task
from rd_assets.core.session.unpickler import safe_loads
from rd_assets.core.trace.experiments import interpret_trace
from rd_assets_tests.rdagent_fixtures import (
    ALPHA158_20,
    WSL_WORKSPACE_PREFIX,
    ExperimentSpec,
    FactorSpec,
    baseline_yaml,
    build_loop,
    default_yaml_files,
    snapshot_bytes,
    workspace_dir,
    write_combined_factors_parquet,
)

SAMPLES = SAMPLES_DIR
SAMPLE_MAP = PathMap.parse([f"{WSL_WORKSPACE_PREFIX}={SAMPLES / 'workspaces'}"])
LGB = "qlib.contrib.model.gbdt.LGBModel"
ALPHA_NAMES = [name for _, name in ALPHA158_20]


def anchor_of(specs: list[ExperimentSpec], task_id: str = "2026-01-09_16-11-14-215581") -> SotaFactorExperiment:
    """The anchor summary of a loop pickled with genuine class paths and read back by the restricted unpickler."""
    loop = safe_loads(snapshot_bytes(build_loop(specs)))
    return interpret_trace(loop, task_id=task_id, chosen_snapshot="__session__/0/3_feedback")


def order_of(
    anchor: SotaFactorExperiment, root: Path, count: int | None, weight: str | None = LGB
) -> tuple[FactorOrder, AccessLog]:
    access = AccessLog()
    path_map = PathMap.parse([f"{WSL_WORKSPACE_PREFIX}={root}"])
    order = resolve_factor_order(
        anchor, model_feature_count=count, weight_class_path=weight, path_map=path_map, access=access
    )
    return order, access


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_samples_match_expected(task_id: str) -> None:
    expected = json.loads((SAMPLES / "expected" / f"{task_id}.expected.json").read_text())
    anchor = read_task(SAMPLES / "log" / task_id, index=SnapshotIndex(None)).anchor
    assert anchor is not None
    access = AccessLog()

    order = resolve_factor_order(
        anchor,
        model_feature_count=expected["model_feature_count"],
        weight_class_path=expected["model_class"],
        path_map=SAMPLE_MAP,
        access=access,
    )

    parquet = str(SAMPLES / "workspaces" / expected["anchor_parquet_relpath"])
    assert order.config_name == expected["executed_config"]
    assert order.alpha158_factors == expected["alpha158_factors"]
    assert order.alpha158_source == expected["alpha158_factors_source"]
    assert order.dynamic_factors == expected["dynamic_factors"]
    assert order.model_input_order == expected["model_input_order"]
    rule = "sorted_union" if "NestedDataLoader" in expected["model_input_order_rule"] else "alpha_then_parquet"
    assert order.model_input_order_rule == rule
    assert order.model_input_count == order.model_feature_count == expected["model_feature_count"]
    assert order.is_aligned and order.alignment_reason is None
    assert order.dynamic_source == parquet
    assert access.opened_paths == [parquet] and access.listed_paths == []
    ensure_aligned(order)


def test_a_weight_the_executed_config_does_not_declare_is_refused_not_guessed() -> None:
    anchor = read_task(SAMPLES / "log" / SIGNED_TASK, index=SnapshotIndex(None)).anchor
    assert anchor is not None
    order = resolve_factor_order(anchor, model_feature_count=23, weight_class_path=LGB, path_map=SAMPLE_MAP)
    assert order.config_name is None and order.model_input_order is None
    assert order.config_reason.startswith("rule: conf_combined_factors_sota_model.yaml because an accepted model")
    assert "GeneralPTNN while the persisted weight is qlib.contrib.model.gbdt.LGBModel" in order.config_reason
    assert order.unresolved_code == "config_unresolved"
    with pytest.raises(ConfigUnresolvedError):
        require_aligned(order)


def test_the_first_accepted_experiment_runs_the_combined_config_not_the_baseline(tmp_path: Path) -> None:
    """based_experiments == [placeholder]: alpha + its own parquet (22 features), never conf_baseline.yaml."""
    hist = [ExperimentSpec(factors=[FactorSpec("Vol_5D"), FactorSpec("Mom_10D")]), ExperimentSpec(decision=False)]
    write_combined_factors_parquet(workspace_dir(tmp_path, hist[0], 0), ["Vol_5D", "Mom_10D"])
    anchor = anchor_of(hist)
    assert [b.kind for b in anchor.based_experiments] == ["placeholder"]
    order, _ = order_of(anchor, tmp_path, 22)
    assert order.config_name == "conf_combined_factors_dynamic.yaml"
    assert order.model_input_order == [*ALPHA_NAMES, "Vol_5D", "Mom_10D"]
    assert order.is_aligned


SOTA_MODEL_HIST = [
    ExperimentSpec(factors=[FactorSpec("Vol_5D")], decision=True),
    ExperimentSpec(kind="model", decision=True),
    ExperimentSpec(factors=[FactorSpec("Mom_10D")], decision=True),
]


def test_without_a_weight_the_rule_stands_and_placeholder_names_stay_unresolved(tmp_path: Path) -> None:
    write_combined_factors_parquet(workspace_dir(tmp_path, SOTA_MODEL_HIST[2], 2), ["Vol_5D", "Mom_10D"])
    order, _ = order_of(anchor_of(SOTA_MODEL_HIST), tmp_path, None, weight=None)
    assert order.config_name == "conf_combined_factors_sota_model.yaml"
    assert "no persisted weight" in order.config_reason
    assert order.alpha158_factors is None
    assert "unrendered Jinja placeholder {{ feature_names }}" in (order.alpha158_unresolved_reason or "")
    assert order.dynamic_factors == ["Vol_5D", "Mom_10D"]
    assert order.model_input_order is None and not order.is_aligned
    assert "model_input_order unresolved" in (order.alignment_reason or "")
    ensure_aligned(order)  # a gap, not a count mismatch


def test_a_weight_no_candidate_config_declares_leaves_the_config_unresolved(tmp_path: Path) -> None:
    order, access = order_of(anchor_of(SOTA_MODEL_HIST), tmp_path, 22, weight="xgboost.sklearn.XGBRegressor")
    assert order.config_name is None
    assert "the weight was not trained by that config, so no config is trusted" in order.config_reason
    assert order.alpha158_factors is None and order.dynamic_factors is None
    assert access.opened_paths == []


def test_baseline_reads_no_parquet(tmp_path: Path) -> None:
    order, access = order_of(anchor_of([ExperimentSpec(factors=[FactorSpec("Vol_5D")], no_based=True)]), tmp_path, 20)
    assert order.config_name == "conf_baseline.yaml"
    assert order.alpha158_factors == ALPHA_NAMES
    assert order.dynamic_factors == [] and order.dynamic_source is None
    assert order.is_aligned
    assert access.opened_paths == []


def test_upstream_template_with_placeholder_names(tmp_path: Path) -> None:
    files = default_yaml_files()
    del files["conf_combined_factors_dynamic.yaml"]
    hist = [
        ExperimentSpec(factors=[FactorSpec("Vol_5D")]),
        ExperimentSpec(factors=[FactorSpec("Mom_10D")], yaml_files=files),
    ]
    write_combined_factors_parquet(workspace_dir(tmp_path, hist[1], 1), ["Vol_5D", "Mom_10D"])
    order, access = order_of(anchor_of(hist), tmp_path, 22)
    assert order.config_name == "conf_combined_factors.yaml"
    assert order.alpha158_factors is None
    assert "{{ feature_names }}" in (order.alpha158_unresolved_reason or "")
    assert order.dynamic_factors == ["Vol_5D", "Mom_10D"]
    assert len(access.opened_paths) == 1


def two_factor_hist() -> list[ExperimentSpec]:
    return [ExperimentSpec(factors=[FactorSpec("Vol_5D")]), ExperimentSpec(factors=[FactorSpec("Mom_10D")])]


def test_names_are_decoded_not_split(tmp_path: Path) -> None:
    hist = two_factor_hist()
    names = ["Mom, 10D", "it's ('feature', 'x')", "Vol_5D", "量价_5D"]
    write_combined_factors_parquet(workspace_dir(tmp_path, hist[1], 1), names)
    order, _ = order_of(anchor_of(hist), tmp_path, 24)
    assert order.dynamic_factors == names
    assert order.model_input_order == ALPHA_NAMES + names
    assert order.is_aligned


def test_only_the_footer_is_read(tmp_path: Path) -> None:
    """Data pages overwritten with garbage: pandas cannot read the file, the footer read still can."""
    hist = two_factor_hist()
    parquet = write_combined_factors_parquet(workspace_dir(tmp_path, hist[1], 1), ["Vol_5D", "Mom_10D"], days=400)
    raw = bytearray(parquet.read_bytes())
    footer_len = int.from_bytes(raw[-8:-4], "little")
    raw[4 : len(raw) - footer_len - 8] = b"\xff" * (len(raw) - footer_len - 12)
    parquet.write_bytes(bytes(raw))
    with pytest.raises(Exception):  # noqa: B017 - any failure proves the data pages are unreadable
        pd.read_parquet(parquet)

    order, _ = order_of(anchor_of(hist), tmp_path, 22)
    assert order.dynamic_factors == ["Vol_5D", "Mom_10D"]


def test_missing_parquet_is_a_reasoned_gap(tmp_path: Path) -> None:
    order, access = order_of(anchor_of(two_factor_hist()), tmp_path, 22)
    parquet = str(workspace_dir(tmp_path, two_factor_hist()[1], 1) / "combined_factors_df.parquet")
    assert order.dynamic_factors is None
    reason = order.dynamic_unresolved_reason or ""
    pickled = f"{WSL_WORKSPACE_PREFIX}/{two_factor_hist()[1].hex_for(1)}"
    assert reason == (
        f"{parquet} not found (pickled workspace_path {pickled!r}; mapped by the path-map rule "
        f"{WSL_WORKSPACE_PREFIX}={tmp_path})"
    )
    assert order.alpha158_factors == ALPHA_NAMES
    assert order.model_input_order is None and not order.is_aligned
    assert order.unresolved_code == "factor_parquet_not_found"
    assert access.opened_paths == [parquet]
    ensure_aligned(order)  # not a count mismatch
    with pytest.raises(FactorParquetNotFoundError) as info:
        require_aligned(order)
    assert info.value.code == "factor_parquet_not_found" and pickled in info.value.message


def test_unmatched_path_map_says_no_rule_matched(tmp_path: Path) -> None:
    order = resolve_factor_order(
        anchor_of(two_factor_hist()),
        model_feature_count=22,
        weight_class_path=LGB,
        path_map=PathMap.parse([f"/elsewhere={tmp_path}"]),
    )
    assert order.unresolved_code == "factor_parquet_not_found"
    assert "no path-map rule matched (--path-map / RD_ASSETS_PATH_MAP: /elsewhere=" in (
        order.dynamic_unresolved_reason or ""
    )


def test_count_mismatch_states_both_counts_and_fails_on_request(tmp_path: Path) -> None:
    hist = two_factor_hist()
    write_combined_factors_parquet(workspace_dir(tmp_path, hist[1], 1), ["Vol_5D", "Mom_10D"])
    order, _ = order_of(anchor_of(hist), tmp_path, 24)
    assert order.model_input_order == [*ALPHA_NAMES, "Vol_5D", "Mom_10D"]  # nothing padded
    assert not order.is_aligned
    assert (
        order.alignment_reason == "model_input_order has 22 names (20 alpha + 2 dynamic) but the model has 24 features"
    )
    with pytest.raises(FeatureCountMismatchError) as info:
        ensure_aligned(order)
    assert info.value.code == "feature_count_mismatch"


def test_parquet_without_pandas_metadata_is_unresolved(tmp_path: Path) -> None:
    hist = two_factor_hist()
    target = workspace_dir(tmp_path, hist[1], 1) / "combined_factors_df.parquet"
    target.parent.mkdir(parents=True)
    pq.write_table(pa.table({"('feature', 'Vol_5D')": [1.0], "datetime": [1]}), target)
    order, _ = order_of(anchor_of(hist), tmp_path, 21)
    assert order.dynamic_factors is None
    assert "no pandas metadata" in (order.dynamic_unresolved_reason or "")


def test_windows_workspace_path_is_mapped_by_a_wsl_rule(tmp_path: Path) -> None:
    win = PureWindowsPath("F:/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace/abc123")
    hist = [
        ExperimentSpec(factors=[FactorSpec("Vol_5D")]),
        ExperimentSpec(factors=[FactorSpec("Mom_10D")], workspace_path=win),
    ]
    write_combined_factors_parquet(tmp_path / "abc123", ["Vol_5D", "Mom_10D"])
    anchor = anchor_of(hist)
    assert anchor.experiment_workspace_path_style == "windows"
    order, _ = order_of(anchor, tmp_path, 22)
    assert order.dynamic_factors == ["Vol_5D", "Mom_10D"]
    assert order.is_aligned


def test_filtercol_keeps_the_loader_order(tmp_path: Path) -> None:
    filter_col = (
        "        - class: FilterCol\n"
        "          kwargs:\n"
        "              fields_group: feature\n"
        '              col_list: ["KLOW", "RESI5", "CORR20"]\n'
        "        - class: Fillna\n"
    )
    files = {"conf_baseline.yaml": baseline_yaml().replace("        - class: Fillna\n", filter_col, 1)}
    spec = ExperimentSpec(factors=[FactorSpec("Vol_5D")], yaml_files=files, no_based=True)
    order, _ = order_of(anchor_of([spec]), tmp_path, 3)
    assert order.alpha158_factors == ["RESI5", "CORR20", "KLOW"]
    assert "filtered by FilterCol" in (order.alpha158_source or "")
    assert order.is_aligned


def test_dynamic_loader_naming_another_file_opens_nothing(tmp_path: Path) -> None:
    files = default_yaml_files()
    files["conf_combined_factors_dynamic.yaml"] = files["conf_combined_factors_dynamic.yaml"].replace(
        "dynamic_path: combined_factors_df.parquet", "dynamic_path: ../../etc/passwd"
    )
    hist = [
        ExperimentSpec(factors=[FactorSpec("Vol_5D")]),
        ExperimentSpec(factors=[FactorSpec("Mom_10D")], yaml_files=files),
    ]
    order, access = order_of(anchor_of(hist), tmp_path, 22)
    assert order.dynamic_factors is None
    assert "'../../etc/passwd'" in (order.dynamic_unresolved_reason or "")
    assert access.opened_paths == []


def test_template_yaml_keeps_placeholders_visible() -> None:
    text = (
        "a: {{ x }}\n"
        'b: [{{ y | default("2008-01-01", true) }}, 2008-01-02]\n'
        'c: {"n": {{ n }}{% if t %}, "t": {{ t }}{% endif %}}\n'
        "d: 'pre {{ z }} post'\n"
    )
    assert load_template_yaml(text) == {
        "a": "{{ x }}",
        "b": ['{{ y | default("2008-01-01", true) }}', "2008-01-02"],
        "c": {"n": "{{ n }}", "t": "{{ t }}"},
        "d": "pre {{ z }} post",
    }
    with pytest.raises(ConfigParseError):
        load_template_yaml("a: [unclosed\n")


UPSTREAM_ALPHA = {name: expr for expr, name in ALPHA158_20[:4]}


def upstream_hist(base_features: dict[str, str] | None) -> list[ExperimentSpec]:
    """rdagent 1.0 shape: only the Jinja templates in the workspace (no fork dynamic config)."""
    files = default_yaml_files()
    del files["conf_combined_factors_dynamic.yaml"]
    return [
        ExperimentSpec(factors=[FactorSpec("Vol_5D")], yaml_files=files, decision=False),
        ExperimentSpec(
            factors=[FactorSpec("KLEN"), FactorSpec("Abc_1D")], yaml_files=files, base_features=base_features
        ),
    ]


def test_base_features_name_the_alphas_of_an_unrendered_template_and_nested_loader_sorts(tmp_path: Path) -> None:
    """NestedDataLoader: a parquet column named like an alpha replaces it, then every name in code-point order."""
    hist = upstream_hist(UPSTREAM_ALPHA)
    write_combined_factors_parquet(workspace_dir(tmp_path, hist[1], 1), ["KLEN", "Abc_1D"])
    order, _ = order_of(anchor_of(hist), tmp_path, 5)
    assert order.config_name == "conf_combined_factors.yaml"
    assert order.alpha158_factors == ["RESI5", "WVMA5", "RSQR5", "KLEN"]
    assert order.alpha158_source == "trace.hist[1][0].base_features"
    assert order.alpha158_source_kind == "base_features"
    assert order.model_input_order_rule == "sorted_union"
    assert order.model_input_order == ["Abc_1D", "KLEN", "RESI5", "RSQR5", "WVMA5"]
    assert order.is_aligned and order.model_input_count == 5


def test_unrendered_template_without_base_features_fails_closed_naming_template_and_placeholder(
    tmp_path: Path,
) -> None:
    hist = upstream_hist(None)
    write_combined_factors_parquet(workspace_dir(tmp_path, hist[1], 1), ["KLEN", "Abc_1D"])
    order, _ = order_of(anchor_of(hist), tmp_path, 5)
    assert order.model_input_order is None and order.unresolved_code == "alpha_names_unresolved"
    with pytest.raises(AlphaNamesUnresolvedError) as info:
        require_aligned(order)
    assert "conf_combined_factors.yaml" in info.value.message
    assert "{{ feature_names }}" in info.value.message
    assert "trace.hist[1][0] has no base_features" in info.value.message


def test_literal_config_names_win_over_differing_base_features_with_a_warning(tmp_path: Path) -> None:
    hist = [ExperimentSpec(factors=[FactorSpec("Vol_5D")], base_features=UPSTREAM_ALPHA)]
    write_combined_factors_parquet(workspace_dir(tmp_path, hist[0], 0), ["Vol_5D"])
    order, _ = order_of(anchor_of(hist), tmp_path, 21)
    assert order.alpha158_factors == ALPHA_NAMES and order.alpha158_source_kind == "config"
    assert order.is_aligned
    assert [w.split(":")[0] for w in order.warnings] == ["alpha_names_differ_from_base_features"]


def test_an_unknown_data_loader_fails_closed(tmp_path: Path) -> None:
    files = default_yaml_files()
    files["conf_combined_factors_dynamic.yaml"] = files["conf_combined_factors_dynamic.yaml"].replace(
        "class: CombinedAlpha158DynamicFactorsLoader", "class: MyShuffledLoader"
    )
    hist = [ExperimentSpec(factors=[FactorSpec("Vol_5D")], yaml_files=files)]
    order, access = order_of(anchor_of(hist), tmp_path, 21)
    assert order.model_input_order is None and order.model_input_order_rule is None
    with pytest.raises(UnknownDataLoaderError) as info:
        require_aligned(order)
    assert "MyShuffledLoader" in info.value.message
    assert access.opened_paths == []


def test_base_features_stay_the_recorded_source_through_a_column_filter(tmp_path: Path) -> None:
    hist = upstream_hist(UPSTREAM_ALPHA)
    files = hist[1].yaml_files or {}
    files["conf_combined_factors.yaml"] = files["conf_combined_factors.yaml"].replace(
        'config: "combined_factors_df.parquet"\n',
        'config: "combined_factors_df.parquet"\n'
        "    infer_processors:\n"
        "        - class: FilterCol\n"
        "          kwargs:\n"
        "              fields_group: feature\n"
        '              col_list: ["KLEN", "RESI5", "Abc_1D"]\n',
    )
    write_combined_factors_parquet(workspace_dir(tmp_path, hist[1], 1), ["KLEN", "Abc_1D"])
    order, _ = order_of(anchor_of(hist), tmp_path, 3)
    assert order.alpha158_factors == ["RESI5", "KLEN"]
    assert order.alpha158_source == "trace.hist[1][0].base_features filtered by FilterCol"
    assert order.alpha158_source_kind == "base_features"
    assert order.model_input_order == ["Abc_1D", "KLEN", "RESI5"] and order.is_aligned
