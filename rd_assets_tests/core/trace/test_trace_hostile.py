"""Red-team findings on reading a trace, one regression test each: typed errors or recorded reasons, no tracebacks.

Graphs are genuine-shaped sessions from :mod:`rd_assets_tests.rdagent_fixtures`, read back through the restricted
unpickler; each test then plants one hostile value in the unpickled stand-ins (after unpickling, so that values the
C pickler cannot write, like 5,000-deep nesting, can be planted too; the last test shows the others arrive through a
real pickle). Every document that comes out must also serialise: pydantic's JSON, and ``json.dumps(...,
allow_nan=False)`` of both dumps (what the bundle writer and the API do).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

import rd_assets.core.trace.experiments as trace_module
from rd_assets.core.artifacts.weights import resolve_model_weight
from rd_assets.core.contracts.models import MAX_JSON_DEPTH, FactorRecord, SotaFactorExperiment
from rd_assets.core.errors import UnreadableSnapshotError, WeightsNotPersistedError
from rd_assets.core.session.standins import StandIn
from rd_assets.core.session.unpickler import RestrictedUnpickler, safe_loads
from rd_assets.core.trace.experiments import MAX_NAME_CHARS, MAX_SOURCE_CHARS, anchor_experiment, interpret_trace
from rd_assets.core.trace.metrics import MAX_TEXT_CHARS, metrics_dict
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec, build_loop, make, snapshot_bytes

TASK = "2026-02-01_10-00-00-000001"
SNAPSHOT = "__session__/2/3_feedback"
ANCHOR = 1
"""hist index of the anchor in :func:`genuine_loop`: hist[0] is accepted too, so it is a based experiment."""
HUGE_INT = 10**5000
"""Over CPython's 4,300-digit int-to-str limit: ``str()`` of it raises ``ValueError``."""

_UNPICKLER = RestrictedUnpickler(io.BytesIO(b""))


def standin(path: str, **state: Any) -> StandIn:
    """An instance of the stand-in class the unpickler makes for ``path``, its state set by ``BUILD``."""
    module, _, name = path.rpartition(".")
    obj = _UNPICKLER._standin(module, name)()
    obj.__setstate__(state)
    return obj


def genuine_loop() -> Any:
    """Two accepted factor experiments (the second is the anchor, with a weight), unpickled."""
    specs = [
        ExperimentSpec(factors=[FactorSpec("A_5D")], metrics={"IC": 0.01}),
        ExperimentSpec(
            factors=[FactorSpec("B_5D"), FactorSpec("C_5D")], metrics={"IC": 0.02}, weights={"model.pkl": b"w"}
        ),
    ]
    return safe_loads(snapshot_bytes(build_loop(specs)))


def state(obj: Any) -> dict[str, Any]:
    return obj.__dict__


def anchor_state(loop: Any) -> dict[str, Any]:
    return state(state(state(loop)["trace"])["hist"][ANCHOR][0])


def task_state(loop: Any, j: int = 0) -> dict[str, Any]:
    return state(anchor_state(loop)["sub_tasks"][j])


def files_of(loop: Any, j: int = 0) -> dict[Any, Any]:
    return state(anchor_state(loop)["sub_workspace_list"][j])["file_dict"]


def interpret(loop: Any) -> SotaFactorExperiment:
    """interpret_trace, then every way the document is written (it must round-trip through its own JSON)."""
    doc = interpret_trace(loop, task_id=TASK, chosen_snapshot=SNAPSHOT)
    text = doc.model_dump_json()
    text.encode("utf-8")
    json.dumps(doc.model_dump(mode="json"), allow_nan=False, sort_keys=True).encode("utf-8")
    json.dumps(doc.model_dump(), allow_nan=False, sort_keys=True).encode("utf-8")
    assert SotaFactorExperiment.model_validate_json(text) == doc
    return doc


def unreadable(loop: Any, where: str) -> UnreadableSnapshotError:
    """interpret_trace refuses with a typed error that names ``where`` inside the trace and the snapshot file."""
    with pytest.raises(UnreadableSnapshotError) as info:
        interpret_trace(loop, task_id=TASK, chosen_snapshot=SNAPSHOT)
    assert where in info.value.message, info.value.message
    assert info.value.path == SNAPSHOT
    return info.value


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1.0}
    for _ in range(depth):
        value = {"a": value}
    return value


def shared_list_bomb(depth: int) -> list[Any]:
    """``depth`` levels of ``[x, x]``: a few hundred bytes of pickle, 2**depth leaves when copied naively."""
    value: list[Any] = ["leaf"]
    for _ in range(depth):
        value = [value, value]
    return value


def factor(doc: SotaFactorExperiment, name: str) -> FactorRecord:
    return next(f for f in doc.sota_factors if f.name == name)


# ------------------------------------------------------------------------------------------ lone surrogates


def test_lone_surrogates_in_names_are_escaped() -> None:
    loop = genuine_loop()
    task_state(loop)["factor_name"] = "B_\udc80"
    doc = interpret(loop)
    assert [f.name for f in doc.sota_factors] == ["A_5D", "B_\\udc80", "C_5D"]


def test_lone_surrogates_in_code_make_the_code_missing_with_a_reason() -> None:
    loop = genuine_loop()
    files_of(loop)["factor.py"] = "def calculate_B_5D():\n    return '\ud800'\n"
    record = factor(interpret(loop), "B_5D")
    assert record.code is None and record.code_sha256 is None
    assert record.code_missing_reason == (
        f"trace.hist[{ANCHOR}][0].sub_workspace_list[0].file_dict['factor.py'] is not valid UTF-8 text "
        "(it holds lone surrogates)"
    )


def test_lone_surrogates_in_yaml_and_model_py_sources_are_left_out() -> None:
    specs = [ExperimentSpec(kind="model"), ExperimentSpec(factors=[FactorSpec("A_5D")])]
    loop = safe_loads(snapshot_bytes(build_loop(specs)))
    exp_files = state(anchor_state(loop)["experiment_workspace"])["file_dict"]
    exp_files["conf_baseline.yaml"] = "a: '\udfff'\n"
    exp_files["model.py"] = "x = '\udfff'\n"
    doc = interpret(loop)
    assert "conf_baseline.yaml" not in doc.experiment_workspace_yaml
    assert "conf_baseline.yaml" in doc.experiment_workspace_files
    assert doc.model_py_source == "trace.hist[0][0].sub_workspace_list[0].file_dict['model.py']"


@pytest.mark.parametrize(
    ("plant", "read"),
    [
        (lambda loop: state(anchor_state(loop)["hypothesis"]).update(hypothesis="h\ud800"), "anchor_hypothesis"),
        (
            lambda loop: state(state(state(loop)["trace"])["hist"][ANCHOR][1]).update(reason="r\ud800"),
            "feedback_reason",
        ),
        (lambda loop: state(loop).update(task_run_id="run\ud800"), "task_run_id"),
        (
            lambda loop: state(anchor_state(loop)["experiment_workspace"]).update(workspace_path="/ws/\ud800"),
            "experiment_workspace_path",
        ),
        (lambda loop: anchor_state(loop).update(base_features={"ALPHA\ud800": "$close"}), "base_features"),
    ],
    ids=["hypothesis", "feedback-reason", "task-run-id", "workspace-path", "base-features-key"],
)
def test_lone_surrogates_in_informational_text_are_escaped(plant: Callable[[Any], None], read: str) -> None:
    loop = genuine_loop()
    plant(loop)
    text = json.dumps(getattr(interpret(loop), read))
    assert "\\\\ud800" in text


def test_lone_surrogates_in_a_file_dict_key_and_a_stand_in_class_name_are_escaped() -> None:
    loop = genuine_loop()
    files_of(loop)["notes\udc00.txt"] = "x"
    anchor_state(loop)["sub_workspace_list"][1] = standin("evil\udc01.Workspace", file_dict={})
    doc = interpret(loop)
    assert "notes\\udc00.txt" in doc.sub_workspaces[0].file_dict_keys
    assert doc.sub_workspaces[1].class_path == "evil\\udc01.Workspace"


# ------------------------------------------------------------------------------------------ ints over 4,300 digits


def test_ints_over_4300_digits_in_metrics_become_markers() -> None:
    loop = genuine_loop()
    state(anchor_state(loop)["running_info"])["result"] = {"IC": HUGE_INT, HUGE_INT: 0.5, "ok": 7}
    doc = interpret(loop)
    assert doc.anchor_metrics == {"IC": "<int of 16610 bits>", "<int of 16610 bits>": 0.5, "ok": 7}


def test_ints_over_4300_digits_in_a_pickled_series_become_markers() -> None:
    series = pd.Series([HUGE_INT, 1], index=pd.Index([HUGE_INT, "IC"], dtype=object), dtype=object)
    metrics, reason = metrics_dict(safe_loads(pickle.dumps(series, protocol=4)))
    assert reason is None
    assert metrics == {"<int of 16610 bits>": "<int of 16610 bits>", "IC": 1}


def test_ints_over_4300_digits_in_variables_become_markers() -> None:
    loop = genuine_loop()
    task_state(loop)["variables"] = {"n": HUGE_INT, "small": 3}
    assert factor(interpret(loop), "B_5D").variables == {"n": "<int of 16610 bits>", "small": 3}


# ------------------------------------------------------------------------------------------ variables


def test_variables_holding_stand_ins_become_markers() -> None:
    loop = genuine_loop()
    task_state(loop)["variables"] = {"close": standin("qlib.data.Feature", name="$close"), "ok": "close price"}
    assert factor(interpret(loop), "B_5D").variables == {"close": "<stand-in qlib.data.Feature>", "ok": "close price"}


def test_variables_with_int_keys_keep_their_text() -> None:
    loop = genuine_loop()
    task_state(loop)["variables"] = {1: "one", (2, 3): "pair", None: "none", "x": "text"}
    assert factor(interpret(loop), "B_5D").variables == {"1": "one", "<tuple>": "pair", "None": "none", "x": "text"}


@pytest.mark.parametrize("nest", [nested_lists, nested_dicts], ids=["lists", "dicts"])
def test_variables_nested_deeply_are_cut_at_the_depth_bound(nest: Callable[[int], Any]) -> None:
    loop = genuine_loop()
    task_state(loop)["variables"] = {"deep": nest(5000)}
    text = json.dumps(factor(interpret(loop), "B_5D").variables)
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in text
    assert text.count("[") + text.count("{") <= MAX_JSON_DEPTH + 1


def test_variables_sharing_one_list_many_times_cost_a_bounded_copy() -> None:
    loop = genuine_loop()
    task_state(loop)["variables"] = {"bomb": shared_list_bomb(64)}
    text = json.dumps(factor(interpret(loop), "B_5D").variables)
    assert "<cut: more than 10000 values>" in text
    assert len(text) < 1_000_000


# ------------------------------------------------------------------------------------------ wrong-typed lists

WRONG_LIST_VALUES = {
    "int": 7,
    "dict": {"0": "task"},
    "str": "sub_tasks",
    "stand-in": standin("rdagent.core.experiment.Task"),
    "list-of-ints": [1, 2],
}


@pytest.mark.parametrize("value", list(WRONG_LIST_VALUES.values()), ids=list(WRONG_LIST_VALUES))
def test_wrong_typed_sub_tasks(value: Any) -> None:
    loop = genuine_loop()
    anchor_state(loop)["sub_tasks"] = value
    where = f"trace.hist[{ANCHOR}][0].sub_tasks" + ("[0]" if isinstance(value, list) else "")
    unreadable(loop, where)
    if not isinstance(value, list):  # a non-list already stops the search for the anchor
        with pytest.raises(UnreadableSnapshotError, match=r"sub_tasks: expected a list"):
            anchor_experiment(loop)


def test_wrong_typed_sub_tasks_of_a_based_experiment_name_its_hist_place() -> None:
    loop = genuine_loop()
    state(state(state(loop)["trace"])["hist"][0][0])["sub_tasks"] = 7
    unreadable(loop, "trace.hist[0][0].sub_tasks: expected a list, found int")


@pytest.mark.parametrize("value", list(WRONG_LIST_VALUES.values()), ids=list(WRONG_LIST_VALUES))
def test_wrong_typed_sub_workspace_list(value: Any) -> None:
    loop = genuine_loop()
    anchor_state(loop)["sub_workspace_list"] = value
    where = f"trace.hist[{ANCHOR}][0].sub_workspace_list" + ("[0]" if isinstance(value, list) else "")
    unreadable(loop, where)
    with pytest.raises(UnreadableSnapshotError) as info:
        resolve_model_weight(anchor_experiment(loop)[1], hist_index=ANCHOR)
    assert where in info.value.message


@pytest.mark.parametrize("value", list(WRONG_LIST_VALUES.values()), ids=list(WRONG_LIST_VALUES))
def test_wrong_typed_based_experiments(value: Any) -> None:
    loop = genuine_loop()
    anchor_state(loop)["based_experiments"] = value
    if isinstance(value, StandIn):
        unreadable(loop, "based_experiments: expected a list, found stand-in rdagent.core.experiment.Task")
    else:
        unreadable(loop, f"trace.hist[{ANCHOR}][0].based_experiments" + ("[0]" if isinstance(value, list) else ""))


def test_based_experiments_of_other_classes_are_listed_as_other() -> None:
    loop = genuine_loop()
    anchor_state(loop)["based_experiments"].append(standin("rdagent.core.experiment.Task"))
    doc = interpret(loop)
    assert (doc.based_experiments[-1].kind, doc.based_experiments[-1].class_path) == (
        "other",
        "rdagent.core.experiment.Task",
    )


def test_a_hist_entry_after_the_anchor_that_is_not_a_pair_is_unreadable() -> None:
    loop = genuine_loop()
    state(state(loop)["trace"])["hist"].append("not a pair")
    unreadable(loop, "trace.hist[2]: expected an (experiment, feedback) pair, found str")


def test_wrong_typed_factor_names_are_unreadable() -> None:
    loop = genuine_loop()
    task_state(loop)["factor_name"] = 42
    unreadable(loop, f"trace.hist[{ANCHOR}][0].sub_tasks[0].factor_name: expected a name (str), found int")


# ------------------------------------------------------------------------------------------ file_dict keys


def test_int_file_dict_keys_in_a_sub_workspace() -> None:
    loop = genuine_loop()
    files_of(loop)[3] = "x"
    where = f"trace.hist[{ANCHOR}][0].sub_workspace_list[0].file_dict"
    assert "found a key of type int" in unreadable(loop, where).message
    with pytest.raises(UnreadableSnapshotError, match=r"sub_workspace_list\[0\]\.file_dict: expected file names"):
        resolve_model_weight(anchor_experiment(loop)[1], hist_index=ANCHOR)


@pytest.mark.parametrize("key", [3, HUGE_INT, standin("evil.Key")], ids=["int", "huge-int", "stand-in"])
def test_int_file_dict_keys_in_the_experiment_workspace(key: Any) -> None:
    loop = genuine_loop()
    state(anchor_state(loop)["experiment_workspace"])["file_dict"][key] = "x"
    unreadable(loop, f"trace.hist[{ANCHOR}][0].experiment_workspace.file_dict: expected file names (str) as keys")


def test_a_file_dict_that_is_not_a_dict_is_unreadable() -> None:
    loop = genuine_loop()
    state(anchor_state(loop)["sub_workspace_list"][1])["file_dict"] = ("factor.py", "x")
    unreadable(loop, f"trace.hist[{ANCHOR}][0].sub_workspace_list[1].file_dict: expected a dict, found tuple")


def test_the_missing_weight_message_stays_bounded_and_printable() -> None:
    loop = genuine_loop()
    files = files_of(loop)
    del files["model.pkl"]
    files.update({f"{'k' * 10_000}{i}\udc80": "x" for i in range(100)})
    with pytest.raises(WeightsNotPersistedError) as info:
        resolve_model_weight(anchor_experiment(loop)[1], hist_index=ANCHOR)
    assert len(info.value.message) < 6000
    info.value.message.encode("utf-8")


# ------------------------------------------------------------------------------------------ nan / inf


def test_nan_and_inf_floats_become_null_where_json_is_produced() -> None:
    loop = genuine_loop()
    state(anchor_state(loop)["running_info"])["result"] = {"IC": float("nan"), "ICIR": float("-inf"), "x": 0.5}
    task_state(loop)["variables"] = {"w": [float("inf"), np.float64("nan")]}
    doc = interpret(loop)
    assert doc.anchor_metrics == {"IC": None, "ICIR": None, "x": 0.5}
    assert factor(doc, "B_5D").variables == {"w": [None, None]}


# ------------------------------------------------------------------------------------------ huge strings


def test_huge_informational_strings_are_cut_with_a_marker() -> None:
    loop = genuine_loop()
    task_state(loop)["description"] = "d" * (MAX_TEXT_CHARS + 5)
    description = factor(interpret(loop), "B_5D").description or ""
    assert description.endswith("...<cut: 5 more characters>")
    assert len(description) < MAX_TEXT_CHARS + 100


def test_huge_factor_names_are_unreadable() -> None:
    loop = genuine_loop()
    task_state(loop)["factor_name"] = "N" * (MAX_NAME_CHARS + 1)
    unreadable(loop, f"sub_tasks[0].factor_name: expected a name of at most {MAX_NAME_CHARS} characters, found 201")


def test_huge_code_is_missing_with_a_reason_never_cut() -> None:
    loop = genuine_loop()
    files_of(loop)["factor.py"] = "#" * (MAX_SOURCE_CHARS + 1)
    record = factor(interpret(loop), "B_5D")
    assert record.code is None
    assert record.code_missing_reason and "over the 8388608 limit" in record.code_missing_reason


# ------------------------------------------------------------------------------------------ metrics structure


def test_a_series_whose_values_are_a_shared_list_bomb_costs_only_the_metrics() -> None:
    good = safe_loads(pickle.dumps(pd.Series({"IC": 0.1}), protocol=4))
    axes, _blocks, *rest = state(state(good)["_mgr"])["_rd_state"]
    state(state(good)["_mgr"])["_rd_state"] = (axes, [shared_list_bomb(40)], *rest)
    metrics, reason = metrics_dict(good)
    assert metrics is None and reason == "metrics unavailable: ValueError: Series values: expected an array, found list"


def test_a_range_index_far_longer_than_its_values_is_never_materialised() -> None:
    good = safe_loads(pickle.dumps(pd.Series([0.1, 0.2]), protocol=4))
    axes = state(state(good)["_mgr"])["_rd_state"][0]
    state(axes[0])["_rd_args"] = (axes[0].__dict__["_rd_args"][0], {"start": 0, "stop": 10**15, "step": 1})
    assert metrics_dict(good) == (None, f"metrics unavailable: ValueError: {10**15} index labels for 2 values")


# ------------------------------------------------------------------------------------------ the contracts


def test_contracts_refuse_values_that_would_fail_serialisation() -> None:
    base = {"name": "A", "experiment_class_path": "x", "sub_task_index": 0, "file_dict_key": "factor.py"}
    for bad in ({"v": HUGE_INT}, {"v": standin("evil.Thing")}, {"v": b"\xff"}, {"v": nested_lists(MAX_JSON_DEPTH)}):
        with pytest.raises(ValueError, match="variables"):
            FactorRecord(**base, variables=bad)
    record = FactorRecord(**base, variables={"k\ud800": [float("nan"), "v\udfff"]}, metrics={"m": float("inf")})
    assert (record.variables, record.metrics) == ({"k\\ud800": [None, "v\\udfff"]}, {"m": None})


def test_a_value_the_contract_refuses_is_a_typed_error_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backstop: should an accessor ever let a bad value through, the contract's refusal is still typed."""
    monkeypatch.setattr(trace_module, "json_data", lambda value: {"v": HUGE_INT})
    error = unreadable(genuine_loop(), "cannot be written as JSON")
    assert "variables: an integer of 16610 bits" in error.message


def test_the_genuine_document_is_unchanged_by_the_accessors() -> None:
    doc = interpret(genuine_loop())
    b = factor(doc, "B_5D")
    assert b.code is not None and b.code_sha256 == hashlib.sha256(b.code.encode()).hexdigest()
    assert b.variables == {"close": "close price"}
    assert doc.anchor_metrics == {"IC": 0.02}
    assert [f.name for f in doc.sota_factors] == ["A_5D", "B_5D", "C_5D"]


def test_hostile_values_arrive_through_a_real_pickle() -> None:
    """The planted values are not test artefacts: rdagent-shaped objects holding them pickle, and read the same."""
    spec = FactorSpec("B_\udc80", variables={1: make("evil.Thing"), "w": float("nan")})  # type: ignore[dict-item]
    loop = build_loop([ExperimentSpec(factors=[spec], raw_result={"IC": HUGE_INT})])
    (record,) = interpret(safe_loads(snapshot_bytes(loop))).sota_factors
    assert (record.name, record.variables, record.metrics) == (
        "B_\\udc80",
        {"1": "<stand-in evil.Thing>", "w": None},
        {"IC": "<int of 16610 bits>"},
    )
