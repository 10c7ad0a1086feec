"""Factor code files: one per SOTA factor, factor_entry.py, consumer keys, and an ast check of each."""

from __future__ import annotations

import hashlib
import json

import pytest

from rd_assets.core.artifacts.factor_code import build_factor_code, factor_relpaths, safe_file_stem
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.task_reader import read_task
from rd_assets_tests.core.artifacts.test_factor_order import SAMPLE_TASKS, SAMPLES, anchor_of
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_samples_give_one_file_per_factor_with_the_expected_code(task_id: str) -> None:
    expected = json.loads((SAMPLES / "expected" / f"{task_id}.expected.json").read_text())
    anchor = read_task(SAMPLES / "log" / task_id, index=SnapshotIndex(None)).anchor
    assert anchor is not None

    code = build_factor_code(anchor)

    by_name = {f.name: f for f in code.index.files}
    assert list(by_name) == expected["sota_factor_names"]
    for factor in expected["factors"]:
        entry = by_name[factor["name"]]
        assert entry.relpath == f"factors/{factor['name']}.py"
        assert entry.defines_function
        assert hashlib.sha256(code.files[entry.relpath]).hexdigest() == factor["factor_py_sha256"] == entry.sha256
    own = [f for f in expected["factors"] if f["hist_index"] == expected["last_sota_factor_index"]]
    assert hashlib.sha256(code.files["factor_entry.py"]).hexdigest() == own[0]["factor_py_sha256"]
    assert code.index.resolved_factor_entry_key == "factor.py"
    assert code.index.factor_file_dict_keys == ["factor.py", *(f"factor_{j}.py" for j in range(1, len(own)))]
    assert code.index.incomplete == []
    assert set(code.files) == {"factor_entry.py", *(f"factors/{n}.py" for n in expected["sota_factor_names"])}


def test_consumer_keys_group_by_based_experiment() -> None:
    hist = [
        ExperimentSpec(factors=[FactorSpec("A_5D"), FactorSpec("B_5D")]),
        ExperimentSpec(kind="model"),
        ExperimentSpec(factors=[FactorSpec("C_5D")]),
        ExperimentSpec(factors=[FactorSpec("D_5D"), FactorSpec("E_5D")]),
    ]
    index = build_factor_code(anchor_of(hist)).index
    entries = [
        (e.based_index, e.resolved_factor_entry_key, e.factor_file_dict_keys) for e in index.based_factor_entries
    ]
    assert entries == [
        (1, "based_factor_1/factor.py", ["based_factor_1/factor.py", "based_factor_1/factor_1.py"]),
        (3, "based_factor_3/factor.py", ["based_factor_3/factor.py"]),
    ]
    assert index.factor_file_dict_keys == ["factor.py", "factor_1.py"]


def test_bad_code_is_reported_with_its_reason() -> None:
    hist = [
        ExperimentSpec(
            factors=[
                FactorSpec("NoFunc_5D", code="def helper():\n    return 1\n"),
                FactorSpec("Broken_5D", code="def calculate_Broken_5D(:\n"),
                FactorSpec("AsClass_5D", code="class AsClass_5D:\n    pass\n"),
                FactorSpec("Missing_5D"),
                FactorSpec("Nested_5D", code="def outer():\n    def calculate_Nested_5D():\n        pass\n"),
            ],
            none_workspaces={3},
        )
    ]
    code = build_factor_code(anchor_of(hist))
    by_name = {f.name: f for f in code.index.files}
    assert by_name["AsClass_5D"].defines_function
    assert by_name["Missing_5D"].relpath is None and "factors/Missing_5D.py" not in code.files
    reasons = dict(entry.split(": ", 1) for entry in code.index.incomplete)
    assert list(reasons) == ["NoFunc_5D", "Broken_5D", "Missing_5D", "Nested_5D"]
    assert reasons["NoFunc_5D"] == "defines neither calculate_NoFunc_5D nor a def/class NoFunc_5D at module level"
    assert reasons["Broken_5D"].startswith("syntax error at line 1")
    assert reasons["Missing_5D"] == "sub-workspace is None (coding failed)"
    assert reasons["Nested_5D"].startswith("defines neither calculate_Nested_5D")
    assert code.files["factors/Broken_5D.py"] == b"def calculate_Broken_5D(:\n"  # published as found


def test_missing_entry_code_is_reported() -> None:
    code = build_factor_code(anchor_of([ExperimentSpec(factors=[FactorSpec("A_5D")], none_workspaces={0})]))
    assert "factor_entry.py" not in code.files
    assert code.index.resolved_factor_entry_key is None
    assert "factor_entry.py: sub-workspace is None (coding failed)" in code.index.incomplete


def test_file_names_are_safe_and_collisions_deterministic() -> None:
    names = ["a/b", "a_b", "A_B", "../etc", ".hidden", "x y", "ok-1.5"]
    relpaths = factor_relpaths(names)
    assert relpaths == {
        "a/b": "factors/a_b.py",
        "a_b": "factors/a_b__2.py",
        "A_B": "factors/A_B__3.py",
        "../etc": "factors/_._etc.py",
        ".hidden": "factors/_hidden.py",
        "x y": "factors/x_y.py",
        "ok-1.5": "factors/ok-1.5.py",
    }
    assert factor_relpaths(names) == relpaths
    assert safe_file_stem("..") == "_."
