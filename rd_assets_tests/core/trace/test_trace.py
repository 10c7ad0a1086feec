"""Trace interpretation (anchor, SOTA factor list, code, metrics, paths) on generated genuine-class-path pickles."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pandas as pd
import pytest

from rd_assets.core.contracts.models import SotaFactorExperiment
from rd_assets.core.errors import NoSotaFactorExperimentError
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.standins import class_path
from rd_assets.core.session.task_reader import TaskReading, read_task
from rd_assets.core.session.unpickler import safe_loads
from rd_assets.core.trace.experiments import anchor_experiment, find_anchor, hist_of, interpret_trace, path_text
from rd_assets_tests.rdagent_fixtures import (
    QUANT_LOOP,
    WINDOWS_WORKSPACE_PREFIX,
    WSL_WORKSPACE_PREFIX,
    ExperimentSpec,
    FactorSpec,
    Snap,
    build_loop,
    make,
    snapshot_bytes,
    write_task,
)

TASK = "2026-02-01_10-00-00-000001"
FACTOR_EXP = "rdagent.scenarios.qlib.experiment.factor_experiment.QlibFactorExperiment"
QUANT_FACTOR_EXP = "rdagent.scenarios.qlib.experiment.quant_experiment.QlibFactorExperiment"
METRICS = {"IC": 0.0412, "ICIR": 0.31, "1day.excess_return_with_cost.annualized_return": 0.118}


def factor_exp(*names: str, decision: bool | None = True, **kw: Any) -> ExperimentSpec:
    return ExperimentSpec(factors=[FactorSpec(n) for n in names], decision=decision, **kw)


def model_exp(decision: bool | None = True, **kw: Any) -> ExperimentSpec:
    return ExperimentSpec(kind="model", decision=decision, **kw)


def read(log_root: Path, hist: list[ExperimentSpec], **kw: Any) -> TaskReading:
    """One snapshot holding the whole hist, read end to end (pickle -> restricted unpickler -> interpretation)."""
    log_dir = write_task(log_root, TASK, [Snap(len(hist), 3, "feedback", len(hist))], hist=hist, **kw)
    return read_task(log_dir, index=SnapshotIndex(None))


def anchor_of(log_root: Path, hist: list[ExperimentSpec], **kw: Any) -> SotaFactorExperiment:
    reading = read(log_root, hist, **kw)
    assert reading.error is None, reading.error
    assert reading.anchor is not None
    return reading.anchor


def names(anchor: SotaFactorExperiment) -> list[str]:
    return [f.name for f in anchor.sota_factors]


def test_anchor_is_last_accepted_factor_experiment_and_based_factors_come_first(log_root: Path) -> None:
    hist = [factor_exp("A"), factor_exp("B", decision=False), factor_exp("C"), factor_exp("D", decision=False)]
    anchor = anchor_of(log_root, hist)
    assert anchor.last_sota_factor_index == 2
    assert anchor.hist_len == 4
    assert names(anchor) == ["A", "C"]
    assert [(f.hist_index, f.based_index, f.file_dict_key) for f in anchor.sota_factors] == [
        (0, 1, "based_factor_1/factor.py"),
        (2, None, "factor.py"),
    ]
    assert [(b.kind, b.hist_index) for b in anchor.based_experiments] == [("placeholder", None), ("factor", 0)]
    assert anchor.anchor_class_path == FACTOR_EXP


def test_factor_fields_and_code(log_root: Path) -> None:
    spec = FactorSpec(
        "Mom_10D",
        description="10-day momentum.",
        formulation=r"\frac{close_t}{close_{t-10}} - 1",
        variables={"close_t": "close at t"},
        code="def calculate_Mom_10D():\n    return 1\n",
    )
    anchor = anchor_of(log_root, [ExperimentSpec(factors=[spec], decision=True)])
    (factor,) = anchor.sota_factors
    assert factor.description == "10-day momentum."
    assert factor.formulation == r"\frac{close_t}{close_{t-10}} - 1"
    assert factor.variables == {"close_t": "close at t"}
    assert factor.code == spec.code
    assert factor.code_sha256 == hashlib.sha256(spec.code.encode()).hexdigest()
    assert factor.code_missing_reason is None
    assert factor.experiment_class_path == FACTOR_EXP


def test_legacy_factor_description(log_root: Path) -> None:
    spec = FactorSpec("Old_1D", description="stored as factor_description", legacy_description=True)
    anchor = anchor_of(log_root, [ExperimentSpec(factors=[spec], decision=True)])
    assert anchor.sota_factors[0].description == "stored as factor_description"


def test_several_sub_tasks_per_experiment_all_count(log_root: Path) -> None:
    hist = [factor_exp("A1", "A2", "A3"), factor_exp("B1", "B2")]
    anchor = anchor_of(log_root, hist)
    assert names(anchor) == ["A1", "A2", "A3", "B1", "B2"]
    assert [f.file_dict_key for f in anchor.sota_factors] == [
        "based_factor_1/factor.py",
        "based_factor_1/factor_1.py",
        "based_factor_1/factor_2.py",
        "factor.py",
        "factor_1.py",
    ]
    assert [f.sub_task_index for f in anchor.sota_factors] == [0, 1, 2, 0, 1]
    codes = [f.code for f in anchor.sota_factors]
    assert all(f"def calculate_{n}()" in c for n, c in zip(names(anchor), codes, strict=True))


def test_none_sub_workspaces_keep_the_factor_without_code(log_root: Path) -> None:
    hist = [factor_exp("A1", "A2", none_workspaces={0}), factor_exp("B1", "B2", none_workspaces={1})]
    anchor = anchor_of(log_root, hist)
    by_name = {f.name: f for f in anchor.sota_factors}
    assert names(anchor) == ["A1", "A2", "B1", "B2"]
    for missing in ("A1", "B2"):
        assert by_name[missing].code is None and by_name[missing].code_sha256 is None
        assert "None" in (by_name[missing].code_missing_reason or "")
    for present in ("A2", "B1"):
        assert by_name[present].code is not None and by_name[present].code_missing_reason is None
    assert [ws.file_dict_keys for ws in anchor.sub_workspaces] == [["factor.py"], []]


def test_factor_py_missing_from_file_dict(log_root: Path) -> None:
    spec = ExperimentSpec(factors=[FactorSpec("A")], decision=True)
    loop = build_loop([spec])
    exp = loop.trace.hist[0][0]
    del exp.sub_workspace_list[0].file_dict["factor.py"]
    anchor = interpret_trace(safe_loads(snapshot_bytes(loop)), task_id=TASK, chosen_snapshot="x")
    assert anchor.sota_factors[0].code is None
    assert "no factor.py" in (anchor.sota_factors[0].code_missing_reason or "")


def test_model_experiments_in_based_experiments_are_skipped(log_root: Path) -> None:
    hist = [factor_exp("A"), model_exp(), factor_exp("B"), model_exp(decision=False), factor_exp("C")]
    anchor = anchor_of(log_root, hist)
    assert anchor.last_sota_factor_index == 4
    assert names(anchor) == ["A", "B", "C"]
    assert [(b.kind, b.hist_index) for b in anchor.based_experiments] == [
        ("placeholder", None),
        ("factor", 0),
        ("model", 1),
        ("factor", 2),
    ]
    assert anchor.based_experiments[2].class_path == (
        "rdagent.scenarios.qlib.experiment.model_experiment.QlibModelExperiment"
    )


def test_accepted_model_experiment_last_anchor_is_earlier_factor(log_root: Path) -> None:
    hist = [factor_exp("A"), factor_exp("B"), model_exp(), factor_exp("C", decision=False), model_exp()]
    anchor = anchor_of(log_root, hist)
    assert anchor.last_sota_factor_index == 1
    assert names(anchor) == ["A", "B"]


def test_duplicated_names_later_replaces_earlier_at_the_later_position(log_root: Path) -> None:
    hist = [
        ExperimentSpec(factors=[FactorSpec("A", description="old A"), FactorSpec("B")], decision=True),
        ExperimentSpec(factors=[FactorSpec("C"), FactorSpec("A", description="new A")], decision=True),
    ]
    anchor = anchor_of(log_root, hist)
    assert names(anchor) == ["B", "C", "A"]
    a = anchor.sota_factors[-1]
    assert (a.description, a.hist_index, a.based_index, a.file_dict_key) == ("new A", 1, None, "factor_1.py")


def test_duplicate_across_based_experiments(log_root: Path) -> None:
    hist = [
        ExperimentSpec(factors=[FactorSpec("A", code="# v0\n"), FactorSpec("B")], decision=True),
        ExperimentSpec(factors=[FactorSpec("A", code="# v1\n")], decision=True),
        ExperimentSpec(factors=[FactorSpec("C")], decision=True),
    ]
    anchor = anchor_of(log_root, hist)
    assert names(anchor) == ["B", "A", "C"]
    assert anchor.sota_factors[1].code == "# v1\n"
    assert anchor.sota_factors[1].hist_index == 1


@pytest.mark.parametrize(
    "hist",
    [
        [factor_exp("A", decision=False), model_exp()],
        [model_exp(), model_exp()],
        [factor_exp("A", decision=None)],
        [ExperimentSpec(factors=[], decision=True)],
        [],
    ],
    ids=["rejected-factor+accepted-model", "models-only", "decision-None", "accepted-without-sub-tasks", "empty-hist"],
)
def test_no_accepted_factor_experiment(log_root: Path, hist: list[ExperimentSpec]) -> None:
    reading = read(log_root, hist)
    assert reading.anchor is None
    assert isinstance(reading.error, NoSotaFactorExperimentError)
    assert reading.error.code == "no_sota_factor_experiment"
    assert reading.selection.hist_len == len(hist)


def test_decision_must_be_true_not_truthy() -> None:
    loop = build_loop([factor_exp("A"), factor_exp("B")])
    loop.trace.hist[1][1].decision = 1
    hist = hist_of(safe_loads(snapshot_bytes(loop)))
    index, _, _ = find_anchor(hist)
    assert index == 0


def test_quant_experiment_module_class_path_is_a_factor_experiment(log_root: Path) -> None:
    hist = [
        factor_exp("A", module="quant_experiment"),
        model_exp(module="quant_experiment"),
        factor_exp("B", module="quant_experiment"),
    ]
    anchor = anchor_of(log_root, hist, loop_path=QUANT_LOOP)
    assert anchor.anchor_class_path == QUANT_FACTOR_EXP
    assert names(anchor) == ["A", "B"]
    assert [b.kind for b in anchor.based_experiments] == ["placeholder", "factor", "model"]


@pytest.mark.parametrize(
    ("workspace_path", "text", "style"),
    [
        (
            PureWindowsPath(f"{WINDOWS_WORKSPACE_PREFIX}/abc"),
            r"F:\Dev\RD-Agent-main\git_ignore_folder\RD-Agent_workspace\abc",
            "windows",
        ),
        (f"{WINDOWS_WORKSPACE_PREFIX}/abc", f"{WINDOWS_WORKSPACE_PREFIX}/abc", "windows"),
        ("F:\\Dev\\ws\\abc", "F:\\Dev\\ws\\abc", "windows"),
        (PurePosixPath(f"{WSL_WORKSPACE_PREFIX}/abc"), f"{WSL_WORKSPACE_PREFIX}/abc", "posix"),
        (f"{WSL_WORKSPACE_PREFIX}/abc", f"{WSL_WORKSPACE_PREFIX}/abc", "posix"),
    ],
    ids=["WindowsPath", "windows-str-slash", "windows-str-backslash", "wsl-PosixPath", "wsl-str"],
)
def test_workspace_path_styles(log_root: Path, workspace_path: Any, text: str, style: str) -> None:
    anchor = anchor_of(log_root, [factor_exp("A", workspace_path=workspace_path)])
    assert anchor.experiment_workspace_path == text
    assert anchor.experiment_workspace_path_style == style


def test_path_text_of_missing_or_odd_values() -> None:
    assert path_text(None) == (None, None)
    assert path_text(42) == (None, None)


def test_metrics_from_a_real_pandas_series(log_root: Path) -> None:
    """Pickled by the installed pandas (3.x stores string labels as Arrow buffers) -> a plain dict."""
    anchor = anchor_of(log_root, [factor_exp("A", metrics=METRICS), factor_exp("B", metrics={"IC": 0.05})])
    assert anchor.anchor_metrics == {"IC": 0.05}
    assert anchor.anchor_metrics_unavailable_reason is None
    assert anchor.sota_factors[0].metrics == METRICS
    assert anchor.sota_factors[1].metrics == {"IC": 0.05}


def test_legacy_result_attribute(log_root: Path) -> None:
    anchor = anchor_of(log_root, [factor_exp("A", metrics=METRICS, legacy_result=True)])
    assert anchor.anchor_metrics == METRICS
    assert anchor.sota_factors[0].metrics == METRICS


@pytest.mark.parametrize(
    ("raw_result", "reason"),
    [
        (make("pandas.core.series.Series", _mgr=None, _typ="series"), "metrics unavailable"),
        (make("pandas.core.series.Series", _mgr=make("pandas.core.internals.managers.SingleBlockManager")), "metrics"),
        (pd.DataFrame({"IC": [0.1]}), "DataFrame"),
        (make("qlib.SomethingElse", x=1), "unsupported metrics object"),
        (None, "no result recorded"),
    ],
    ids=["series-without-manager", "manager-without-state", "dataframe", "unknown-object", "none"],
)
def test_undecodable_metrics_give_a_reason_not_a_crash(log_root: Path, raw_result: Any, reason: str) -> None:
    anchor = anchor_of(log_root, [factor_exp("A", raw_result=raw_result)])
    assert anchor.anchor_metrics is None
    assert reason in (anchor.anchor_metrics_unavailable_reason or "")
    assert anchor.sota_factors[0].metrics is None
    assert anchor.sota_factors[0].name == "A"


def test_experiment_workspace_yaml_and_files(log_root: Path) -> None:
    anchor = anchor_of(log_root, [factor_exp("A", yaml_files={"conf_x.yaml": "a: 1\n", "read_exp_res.py": "x"})])
    assert anchor.experiment_workspace_yaml == {"conf_x.yaml": "a: 1\n"}
    assert anchor.experiment_workspace_files == ["conf_x.yaml", "read_exp_res.py"]


def test_weights_keys_are_listed_per_sub_workspace(log_root: Path) -> None:
    anchor = anchor_of(log_root, [factor_exp("A", "B", weights={"params.pkl": b"\x80\x04N."})])
    assert [ws.file_dict_keys for ws in anchor.sub_workspaces] == [["factor.py", "params.pkl"], ["factor.py"]]


def test_task_run_id_and_hypothesis(log_root: Path) -> None:
    anchor = anchor_of(log_root, [factor_exp("A", hypothesis="Momentum persists.")], task_run_id="run-42")
    assert anchor.task_run_id == "run-42"
    assert anchor.anchor_hypothesis == "Momentum persists."
    assert anchor.feedback_reason


def test_based_experiments_share_identity_with_hist() -> None:
    """The fixture builds based_experiments like rdagent: the hist objects themselves (pickle memo keeps it)."""
    loop = safe_loads(snapshot_bytes(build_loop([factor_exp("A"), model_exp(), factor_exp("B", decision=False)])))
    hist = hist_of(loop)
    based = hist[2][0].based_experiments
    assert based[1] is hist[0][0] and based[2] is hist[1][0]
    assert class_path(based[0]) == FACTOR_EXP and based[0].sub_tasks == []


def test_anchor_experiment_returns_the_object_for_weights() -> None:
    loop = safe_loads(snapshot_bytes(build_loop([factor_exp("A", weights={"model.pkl": b"w"}), model_exp()])))
    index, exp = anchor_experiment(loop)
    assert index == 0
    assert exp.sub_workspace_list[0].file_dict["model.pkl"] == b"w"
