"""The two genuine rdagent samples resolve exactly as their expected JSON says (written by the real rdagent run)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from rd_assets.core.errors import NoReadableSnapshotError, NoSnapshotError
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.file_format import load_body
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.snapshots import open_chosen, select_snapshot
from rd_assets.core.session.task_reader import read_task
from rd_assets.core.trace.experiments import anchor_experiment, attr
from rd_assets_tests.conftest import PLAIN_TASK, SAMPLE_LOGS, SAMPLE_TASKS, SIGNED_TASK, expected_for


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_sample_matches_expected(task_id: str, index: SnapshotIndex) -> None:
    exp = expected_for(task_id)
    log_dir = SAMPLE_LOGS / task_id
    reading = read_task(log_dir, index=index, signing_key=exp.get("signing_key"))

    sel = reading.selection
    assert reading.error is None
    assert sel.task_id == task_id
    assert sel.chosen_snapshot == exp["chosen_snapshot_relpath"]
    assert sel.tied_snapshots == exp["chosen_snapshot_relpaths"]
    assert sel.hist_len == exp["hist_len"]
    assert sel.loop_class == exp["loop_class"]
    assert sel.file_format == exp["format"]
    assert sel.signature == ("verified" if exp["format"] == "signed" else "unsigned")
    assert sel.skipped == 0
    assert len(sel.candidates) == len(list(log_dir.glob("__session__/*/*")))

    anchor = reading.anchor
    assert anchor is not None
    assert anchor.last_sota_factor_index == exp["last_sota_factor_index"]
    assert anchor.hist_len == exp["hist_len"]
    assert anchor.experiment_workspace_path == exp["anchor_workspace_path"]
    assert anchor.experiment_workspace_path_style == exp["workspace_path_style"]
    assert [f.name for f in anchor.sota_factors] == exp["sota_factor_names"]
    for got, want in zip(anchor.sota_factors, exp["factors"], strict=True):
        assert got.name == want["name"]
        assert got.formulation == want["formulation"]
        assert got.description == want["description"]
        assert got.variables == want["variables"]
        assert got.hist_index == want["hist_index"]
        assert got.code_sha256 == want["factor_py_sha256"]
        assert got.code is not None
        assert hashlib.sha256(got.code.encode()).hexdigest() == want["factor_py_sha256"]
    weights_key = exp["weights_key"]
    assert any(weights_key in ws.file_dict_keys for ws in anchor.sub_workspaces)
    assert exp["executed_config"] in anchor.experiment_workspace_yaml
    based = [
        b.kind if b.kind != "factor" and b.kind != "model" else f"{b.kind}@{b.hist_index}"
        for b in anchor.based_experiments
    ]
    assert based == exp["anchor_based_experiments"]
    assert anchor.sota_model_hist_index == exp["sota_model_experiment_hist_index"]
    model_py_sha = hashlib.sha256(anchor.model_py.encode()).hexdigest() if anchor.model_py is not None else None
    assert model_py_sha == exp["anchor_model_py_sha256"]
    assert anchor.task_run_id is None or isinstance(anchor.task_run_id, str)
    if exp["alpha158_factors_source"].endswith(".base_features"):
        assert list(anchor.base_features or {}) == exp["alpha158_factors"]


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_sample_chosen_hist_is_longest_of_all_snapshots(task_id: str) -> None:
    """Independent of the selection code: the chosen length is the max over every readable snapshot."""
    exp = expected_for(task_id)
    reading = read_task(SAMPLE_LOGS / task_id, index=SnapshotIndex(None), signing_key=exp.get("signing_key"))
    lengths = [c.hist_len for c in reading.selection.candidates]
    assert None not in lengths
    assert reading.selection.hist_len == max(lengths) == exp["hist_len"]


def test_signed_sample_without_key_is_read_but_not_verified(index: SnapshotIndex) -> None:
    reading = read_task(SAMPLE_LOGS / SIGNED_TASK, index=index, signing_key=None)
    assert reading.selection.signature == "signature not verified"
    assert {c.signature for c in reading.selection.candidates} == {"signature not verified"}
    assert reading.anchor is not None
    assert reading.anchor.last_sota_factor_index == expected_for(SIGNED_TASK)["last_sota_factor_index"]


def test_signed_sample_with_wrong_key_skips_every_candidate(index: SnapshotIndex) -> None:
    log_dir = SAMPLE_LOGS / SIGNED_TASK
    with pytest.raises(NoSnapshotError) as info:
        read_task(log_dir, index=index, signing_key="not-the-" + expected_for(SIGNED_TASK)["signing_key"])
    assert info.value.code == "no_snapshot"
    assert "signature_mismatch" in info.value.message
    summaries = index.get_many("summary", str(log_dir.resolve()))
    assert len(summaries) == len(list(log_dir.glob("__session__/*/*")))
    assert all('"code":"signature_mismatch"' in payload for _, payload in summaries.values())


def test_plain_sample_is_refused_under_a_signing_key_unless_opted_out(
    index: SnapshotIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a key, plain files are refused (never passed off as verified); the explicit opt-out reads them as
    ``unsigned``."""
    with pytest.raises(NoReadableSnapshotError, match="unsigned_snapshot"):
        read_task(SAMPLE_LOGS / PLAIN_TASK, index=index, signing_key="some-key")
    monkeypatch.setenv("RD_ASSETS_ALLOW_UNSIGNED", "1")
    reading = read_task(SAMPLE_LOGS / PLAIN_TASK, index=index, signing_key="some-key")
    assert reading.selection.signature == "unsigned"
    assert reading.anchor is not None


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_sample_reading_opens_only_session_files(task_id: str, index: SnapshotIndex) -> None:
    access = AccessLog()
    log_dir = SAMPLE_LOGS / task_id
    read_task(log_dir, index=index, signing_key=expected_for(task_id).get("signing_key"), access=access)
    assert access.opened_paths
    assert access.violations(log_dir) == []


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_sample_metrics_written_by_pandas_2_decode(task_id: str) -> None:
    """The samples' metrics Series were pickled by pandas 2.3.3; they must decode and agree with the feedback text."""
    exp = expected_for(task_id)
    log_dir = SAMPLE_LOGS / task_id
    reading = read_task(log_dir, index=SnapshotIndex(None), signing_key=exp.get("signing_key"))
    anchor = reading.anchor
    assert anchor is not None and anchor.anchor_metrics is not None, anchor and anchor.anchor_metrics_unavailable_reason
    metrics = anchor.anchor_metrics
    assert all(isinstance(v, float | int) for v in metrics.values())

    with open_chosen(log_dir, reading.selection.chosen_snapshot, signing_key=exp.get("signing_key")) as body:
        loop = load_body(body)
    hist_index, _ = anchor_experiment(loop)
    feedback = attr(loop, "trace").__dict__["hist"][hist_index][1]
    observed = dict(re.findall(r"(\w+)=(-?[\d.]+)", attr(feedback, "observations")))
    assert round(metrics["IC"], 4) == float(observed["IC"])
    assert round(metrics["1day.excess_return_with_cost.annualized_return"], 4) == float(observed["annualized_return"])


def test_select_snapshot_hands_over_the_chosen_snapshot(tmp_path: Path) -> None:
    """A cold selection hands the chosen snapshot's verified bytes over (its object stays in the reader)."""
    exp = expected_for(PLAIN_TASK)
    outcome = select_snapshot(SAMPLE_LOGS / PLAIN_TASK, index=SnapshotIndex(tmp_path / "i.sqlite"))
    assert outcome.unpickled == len(outcome.selection.candidates)
    assert outcome.body is not None
    with outcome.body as body:
        assert body.shown == outcome.selection.chosen_snapshot
        assert len(attr(attr(load_body(body), "trace"), "hist")) == exp["hist_len"]
