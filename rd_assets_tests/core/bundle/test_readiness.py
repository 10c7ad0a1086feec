"""Readiness tells the truth: a newer unreadable snapshot, backups, unverified signatures, path maps, task names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.bundle.extract import ExtractOutcome, extract_task
from rd_assets.core.errors import NoReadableSnapshotError
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.file_format import ENV_REQUIRE_SIGNATURE
from rd_assets.core.session.index import SnapshotIndex
from rd_assets_tests.bundle_testkit import GeneratedTask, generated_task
from rd_assets_tests.rdagent_fixtures import RDAGENT_1_STEPS, ExperimentSpec, FactorSpec, growing_timeline, write_task

KEY = "readiness-test-key"


def extract(task: GeneratedTask, store: Path, **kwargs: object) -> ExtractOutcome:
    kwargs.setdefault("path_map", task.path_map)
    return extract_task(task.log_dir, store=store, index=SnapshotIndex(None), **kwargs)  # type: ignore[arg-type]


def test_a_newer_truncated_snapshot_publishes_a_bundle_that_is_not_ready(tmp_path: Path) -> None:
    task = generated_task(tmp_path)
    newest = task.log_dir / "__session__" / "2" / "0_direct_exp_gen"
    newest.parent.mkdir()
    data = (task.log_dir / "__session__" / "1" / "4_record").read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # RD-Agent is still writing it
    outcome = extract(task, tmp_path / "store")
    manifest = outcome.content.manifest
    assert outcome.publish.changed and not manifest.selection_ready
    assert manifest.session_anchor.chosen_session_file == "__session__/1/4_record"
    [reason] = manifest.reasons
    assert reason.startswith("newer_snapshot_unreadable: __session__/2/0_direct_exp_gen is newer than the chosen")
    assert "unreadable_snapshot" in reason


def test_backups_are_skipped_unopened_and_do_not_block_readiness(tmp_path: Path) -> None:
    task = generated_task(tmp_path)
    session = task.log_dir / "__session__"
    shutil.copyfile(session / "1" / "4_record", session / "1" / "4_record.bak")
    (session / "1" / "3_feedback.bak20260113").write_bytes(b"not even a pickle")
    access = AccessLog()
    outcome = extract(task, tmp_path / "store", access=access)
    manifest = outcome.content.manifest
    assert manifest.selection_ready and manifest.reasons == []
    backups = [c for c in manifest.session_anchor.candidates if c.error and c.error.code == "skipped_backup"]
    assert sorted(c.relpath for c in backups) == ["__session__/1/3_feedback.bak20260113", "__session__/1/4_record.bak"]
    assert not any(p.endswith((".bak", ".bak20260113")) for p in access.opened_paths)


def signed_task(tmp_path: Path) -> GeneratedTask:
    """The generated task's layout, written as rdagent 1.0 signed files."""
    task = generated_task(tmp_path)
    hist = [
        ExperimentSpec(factors=[FactorSpec("PriceRange_20D")], decision=True),
        ExperimentSpec(factors=[FactorSpec("Momentum_10D"), FactorSpec("Volatility_5D")], decision=True),
    ]
    shutil.rmtree(task.log_dir)
    write_task(tmp_path / "log", task.log_dir.name, growing_timeline(2, RDAGENT_1_STEPS), hist=hist, signing_key=KEY)
    return task


def test_a_signed_session_read_without_a_key_warns_and_keeps_readiness(tmp_path: Path) -> None:
    task = signed_task(tmp_path)
    manifest = extract(task, tmp_path / "store", allow_incomplete=True).content.manifest
    assert [w.split(":")[0] for w in manifest.warnings] == ["signature_unverified"]
    assert "read without RD_ASSETS_SIGNING_KEY" in manifest.warnings[0]
    keyed = extract(task, tmp_path / "store2", allow_incomplete=True, signing_key=KEY).content.manifest
    assert keyed.warnings == [] and keyed.reasons == manifest.reasons


def test_require_signature_refuses_unverifiable_and_unsigned_files_before_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_REQUIRE_SIGNATURE, "1")
    signed = signed_task(tmp_path / "a")
    with pytest.raises(NoReadableSnapshotError) as info:
        extract(signed, tmp_path / "store")
    assert {c.error.code for c in info.value.candidates if c.error} == {"signature_unverified"}
    assert extract(signed, tmp_path / "store", allow_incomplete=True, signing_key=KEY).content.manifest.warnings == []
    plain = generated_task(tmp_path / "b")
    access = AccessLog()
    with pytest.raises(NoReadableSnapshotError) as info:
        extract(plain, tmp_path / "store", signing_key=KEY, access=access)
    assert {c.error.code for c in info.value.candidates if c.error} == {"unsigned_snapshot"}


def test_a_path_map_rule_that_matches_nothing_is_a_warning(tmp_path: Path) -> None:
    task = generated_task(tmp_path)
    rules = [f"{r.source}={r.target}" for r in task.path_map.rules] + [f"/typo/ws={tmp_path}"]
    manifest = extract(task, tmp_path / "store", path_map=PathMap.parse(rules)).content.manifest
    assert manifest.selection_ready
    assert manifest.warnings == [
        f"path_map_rule_unused: the path-map rule /typo/ws={tmp_path} matches no pickled path of this task"
    ]


@pytest.mark.parametrize("task_id", ["my-run.v2", "factor_run_7", "RUN-2026"])
def test_any_safe_task_dir_name_is_a_task(tmp_path: Path, task_id: str) -> None:
    task = generated_task(tmp_path, task_id=task_id)
    outcome = extract(task, tmp_path / "store")
    assert outcome.content.manifest.task_id == task_id and outcome.content.manifest.selection_ready
    assert (tmp_path / "store" / task_id / "manifest.json").is_file()
