"""Model weight resolution: only the anchor's sub-workspace file_dicts, model.pkl over params.pkl, loud absence."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from rd_assets.core.artifacts.weights import resolve_model_weight
from rd_assets.core.errors import WeightsNotPersistedError
from rd_assets.core.samples import SAMPLE_TASKS, SAMPLES_DIR
from rd_assets.core.session.file_format import load_session_file
from rd_assets.core.session.unpickler import safe_loads
from rd_assets.core.trace.experiments import anchor_experiment
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec, build_loop, snapshot_bytes

SAMPLES = SAMPLES_DIR


def loop_of(specs: list[ExperimentSpec], edit: Any = None) -> Any:
    """Pickle a loop with genuine class paths and read it back through the restricted unpickler."""
    loop = build_loop(specs)
    if edit is not None:
        edit(loop)
    return safe_loads(snapshot_bytes(loop))


def sub_workspaces(loop: Any, hist_index: int) -> list[Any]:
    return loop.__dict__["trace"].__dict__["hist"][hist_index][0].__dict__["sub_workspace_list"]


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_sample_weights_match_expected(task_id: str) -> None:
    expected = json.loads((SAMPLES / "expected" / f"{task_id}.expected.json").read_text())
    loaded = load_session_file(SAMPLES / "log" / task_id / expected["chosen_snapshot_relpath"])
    hist_index, exp = anchor_experiment(loaded.obj)

    weight = resolve_model_weight(exp, hist_index=hist_index)

    assert weight.info.resolved_model_weight_key == expected["weights_key"]
    assert weight.info.resolved_model_weight_source == "factor_exp"
    assert weight.info.sha256 == expected["weights_sha256"] == hashlib.sha256(weight.data).hexdigest()
    assert weight.info.size == expected["weights_bytes"] == len(weight.data)
    assert weight.info.location == expected["weights_location"]
    assert weight.info.hist_index == expected["last_sota_factor_index"]


def test_model_pkl_in_a_later_sub_workspace_beats_params_pkl_in_an_earlier_one() -> None:
    spec = ExperimentSpec(factors=[FactorSpec("A_5D"), FactorSpec("B_5D")], weights={"params.pkl": b"params"})

    def add_model_pkl(loop: Any) -> None:
        sub_workspaces(loop, 0)[1].__dict__["file_dict"]["model.pkl"] = b"model"

    loop = loop_of([spec], add_model_pkl)
    weight = resolve_model_weight(anchor_experiment(loop)[1], hist_index=0)

    assert sorted(sub_workspaces(loop, 0)[0].__dict__["file_dict"]) == ["factor.py", "params.pkl"]
    assert weight.info.resolved_model_weight_key == "model.pkl"
    assert weight.info.sub_workspace_index == 1
    assert weight.data == b"model"
    assert weight.info.location == "trace.hist[0][0].sub_workspace_list[1].file_dict['model.pkl']"


def test_params_pkl_keeps_its_own_name() -> None:
    loop = loop_of([ExperimentSpec(factors=[FactorSpec("A_5D")], weights={"params.pkl": b"\x80\x04params"})])
    weight = resolve_model_weight(anchor_experiment(loop)[1], hist_index=0)
    assert weight.info.resolved_model_weight_key == "params.pkl"
    assert weight.data == b"\x80\x04params"


def test_missing_weight_names_the_experiment_and_the_keys_present() -> None:
    specs = [
        ExperimentSpec(factors=[FactorSpec("A_5D"), FactorSpec("B_5D")], none_workspaces={1}, decision=True),
        ExperimentSpec(kind="model", decision=True, weights={"model.pkl": b"never-a-factor-weight"}),
    ]
    hist_index, exp = anchor_experiment(loop_of(specs))
    assert hist_index == 0

    with pytest.raises(WeightsNotPersistedError) as info:
        resolve_model_weight(exp, hist_index=hist_index)

    assert info.value.code == "weights_not_persisted"
    assert "trace.hist[0]" in info.value.message
    assert "[0] ['factor.py']" in info.value.message
    assert "[1] None" in info.value.message


def test_a_text_value_under_model_pkl_is_not_a_weight() -> None:
    def text_weight(loop: Any) -> None:
        sub_workspaces(loop, 0)[0].__dict__["file_dict"]["model.pkl"] = "not bytes"

    loop = loop_of([ExperimentSpec(factors=[FactorSpec("A_5D")])], text_weight)
    with pytest.raises(WeightsNotPersistedError, match=r"\['factor.py', 'model.pkl'\]"):
        resolve_model_weight(anchor_experiment(loop)[1], hist_index=0)
