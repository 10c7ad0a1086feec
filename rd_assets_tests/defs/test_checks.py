"""Failing checks stop the chain (blocking) or flag the bundle (non-blocking), always saying why."""

import json
import shutil
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterRunStatus, instance_for_test

from rd_assets.core.artifacts.weights import ModelWeight
from rd_assets.core.bundle.rules import order_problems, traversal_problems, weight_source_problems
from rd_assets.core.bundle.store import current_version_dir
from rd_assets.core.bundle.task_status import read_failure, record_failure
from rd_assets.core.contracts.artifact_models import FactorOrder
from rd_assets.core.contracts.bundle_models import Manifest
from rd_assets.core.errors import WeightsNotPersistedError
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.task_reader import read_task
from rd_assets.defs.check_results import bundle_integrity as bundle_integrity_result
from rd_assets.defs.partitions import FINGERPRINT_TAG
from rd_assets_tests.defs.test_assets import (
    ASSET_NAMES,
    SAMPLES,
    chain_resources,
    checks_of,
    materialize_task,
    materialized,
    step_failure,
)
from rd_assets_tests.rdagent_fixtures import (
    WSL_WORKSPACE_PREFIX,
    ExperimentSpec,
    FactorSpec,
    growing_timeline,
    workspace_dir,
    write_combined_factors_parquet,
    write_task,
)

TASK = "2026-01-09_16-11-14-215581"
SAMPLE = "2026-03-02_09-15-27-118204"
BOOSTER_24 = SAMPLES / "models" / "params.pkl"
"""A genuine qlib LGBModel pickle whose Booster takes 24 features (20 Alpha158 + 4 dynamic)."""


def _reasons(evaluation) -> list[str]:
    return evaluation.metadata["reasons"].value


def _fixture_task(tmp_path: Path, *, weights: dict[str, bytes] | None, bad_code: bool = False) -> Path:
    """Two accepted factor experiments (2 + 2 factors) so the dynamic config and its parquet apply."""
    first = ExperimentSpec(factors=[FactorSpec("Mom_10D"), FactorSpec("Vol_5D")], decision=True)
    second_factors = [FactorSpec("Rev_5D"), FactorSpec("Skew_20D", code="x = 1\n" if bad_code else None)]
    second = ExperimentSpec(factors=second_factors, decision=True, weights=weights)
    log_root = tmp_path / "log"
    write_task(log_root, TASK, growing_timeline(2), hist=[first, second])
    write_combined_factors_parquet(
        workspace_dir(tmp_path / "workspaces", second, 1), ["Mom_10D", "Vol_5D", "Rev_5D", "Skew_20D"]
    )
    return log_root


def _map(tmp_path: Path) -> list[str]:
    return [f"{WSL_WORKSPACE_PREFIX}={tmp_path / 'workspaces'}"]


def test_task_without_weights_fails_its_blocking_check_and_publishes_nothing(tmp_path: Path) -> None:
    log_root = _fixture_task(tmp_path, weights=None)
    resources = chain_resources(tmp_path, log_root, _map(tmp_path))
    with instance_for_test() as instance:
        result = materialize_task(instance, resources, TASK)
    assert not result.success
    assert materialized(result) == ["session_snapshot", "last_sota_factor_exp"]
    check = checks_of(result)["model_weight_source_is_factor_exp"]
    assert not check.passed
    assert any("weights_not_persisted" in r and "trace.hist[1]" in r for r in _reasons(check))
    error, metadata = step_failure(result)
    assert "weights_not_persisted" in error
    assert (metadata["asset"], metadata["error_code"]) == ("model_weight", "weights_not_persisted")
    store = resources["bundle_store"].path
    assert current_version_dir(store, TASK) is None and not (store / TASK).exists()
    record = read_failure(store, TASK)
    assert record is not None and record.code == "weights_not_persisted" and "trace.hist[1]" in record.message


def test_fixture_task_with_weights_is_published_and_ready(tmp_path: Path) -> None:
    """The control for the test above and below: the same task with a weight goes all the way.

    It also clears the failure record an earlier failed run of the task left in the store.
    """
    log_root = _fixture_task(tmp_path, weights={"params.pkl": BOOSTER_24.read_bytes()})
    resources = chain_resources(tmp_path, log_root, _map(tmp_path))
    record_failure(resources["bundle_store"].path, TASK, WeightsNotPersistedError("an earlier run"))
    with instance_for_test() as instance:
        result = materialize_task(instance, resources, TASK)
    assert result.success, [e.message for e in result.all_events if e.is_step_failure]
    assert read_failure(resources["bundle_store"].path, TASK) is None
    assert all(ev.passed for ev in checks_of(result).values())
    manifest = Manifest.model_validate_json((resources["bundle_store"].path / TASK / "manifest.json").read_bytes())
    assert manifest.selection_ready


def test_incomplete_factor_code_warns_but_still_publishes_a_not_ready_bundle(tmp_path: Path) -> None:
    log_root = _fixture_task(tmp_path, weights={"params.pkl": BOOSTER_24.read_bytes()}, bad_code=True)
    resources = chain_resources(tmp_path, log_root, _map(tmp_path))
    with instance_for_test() as instance:
        result = materialize_task(instance, resources, TASK)
    check = checks_of(result)["factor_code_complete"]
    assert not check.passed and check.severity.value == "WARN"
    assert any("Skew_20D" in r for r in _reasons(check))
    assert "aistock_bundle" in materialized(result)
    manifest = Manifest.model_validate_json((resources["bundle_store"].path / TASK / "manifest.json").read_bytes())
    assert not manifest.selection_ready
    assert any(r.startswith("factor_code_incomplete") for r in manifest.reasons)
    ready = checks_of(result)["selection_ready"]
    assert not ready.passed and ready.severity.value == "WARN"
    assert _reasons(ready) == manifest.reasons
    assert result.success and checks_of(result)["bundle_integrity"].passed  # published, only not ready


@pytest.fixture
def sample_with_own_workspaces(tmp_path: Path) -> tuple[Path, list[str], Path]:
    """The genuine sample log (read in place) with a private copy of its workspaces we may damage."""
    workspaces = Path(shutil.copytree(SAMPLES / "workspaces", tmp_path / "workspaces"))
    for path in [workspaces, *workspaces.rglob("*")]:  # the shared tree is read-only; this copy is ours
        path.chmod(0o755 if path.is_dir() else 0o644)
    hex_ = json.loads((SAMPLES / "expected" / f"{SAMPLE}.expected.json").read_text())["anchor_workspace_hex"]
    return SAMPLES / "log", [f"{WSL_WORKSPACE_PREFIX}={workspaces}"], workspaces / hex_ / "combined_factors_df.parquet"


@pytest.mark.parametrize("damage", ["one_column_short", "parquet_missing"])
def test_misaligned_or_unresolved_order_blocks_the_bundle(
    tmp_path: Path, sample_with_own_workspaces: tuple, damage: str
) -> None:
    log_root, path_map, parquet = sample_with_own_workspaces
    if damage == "parquet_missing":
        parquet.unlink()
    else:
        import pyarrow.parquet as pq

        from rd_assets.core.artifacts.factor_order import decode_feature_columns

        names = decode_feature_columns(pq.read_schema(parquet))
        write_combined_factors_parquet(parquet, names[:-1])
    resources = chain_resources(tmp_path, log_root, path_map)
    with instance_for_test() as instance:
        result = materialize_task(instance, resources, SAMPLE)
    assert not result.success
    assert "aistock_bundle" not in materialized(result) and "factor_order" in materialized(result)
    check = checks_of(result)["factor_order_matches_model"]
    assert not check.passed
    reason = " ".join(_reasons(check))
    assert (
        ("24 names" in reason and "25 features" in reason) if damage == "one_column_short" else "unresolved" in reason
    )
    assert checks_of(result)["no_workspace_traversal"].passed
    assert current_version_dir(resources["bundle_store"].path, SAMPLE) is None


def test_bundle_integrity_fails_on_a_tampered_bundle(tmp_path: Path) -> None:
    resources = chain_resources(tmp_path, SAMPLES / "log")
    with instance_for_test() as instance:
        assert materialize_task(instance, resources, SAMPLE).success
        version = current_version_dir(resources["bundle_store"].path, SAMPLE)
        target = version / "factor_order.json"
        target.chmod(0o644)
        target.write_text(target.read_text().replace("IntradayReturn_60D", "IntradayReturn_61D"))
        published = Manifest.model_validate_json((version / "manifest.json").read_bytes())
        check = bundle_integrity_result(resources["bundle_store"].path, SAMPLE, published)
        assert not check.passed and check.severity.value == "ERROR"
        assert any("factor_order.json" in r for r in check.metadata["reasons"].value)
        records = {
            name: instance.fetch_materializations(AssetKey(name), limit=1).records[0].asset_materialization.metadata
            for name in ASSET_NAMES
        }
        assert all({"paths_opened", "paths_listed"} <= set(meta) for meta in records.values())
        assert records["session_snapshot"]["paths_opened"].value


def test_traversal_problems_allow_only_session_files_and_the_anchor_parquet(tmp_path: Path) -> None:
    log_dir = tmp_path / "log" / TASK
    parquet = "/data/ws/abc/combined_factors_df.parquet"
    order = FactorOrder.model_construct(dynamic_source=parquet)
    access = AccessLog()
    access.listed(log_dir / "__session__")
    access.opened(log_dir / "__session__" / "0" / "3_feedback")
    access.opened(Path(parquet))
    assert traversal_problems(access, log_dir, order) == []
    access.opened(Path("/data/ws/abc/model.pkl"))
    access.listed(log_dir)
    access.listed(Path(parquet))
    problems = traversal_problems(access, log_dir, order)
    assert any("/data/ws/abc/model.pkl" in p for p in problems)
    assert any(p.endswith(str(log_dir)) for p in problems)
    assert any("listed as a directory" in p for p in problems)


def test_order_problems_name_both_counts() -> None:
    order = FactorOrder.model_construct(
        model_input_order=["a", "b"], model_feature_count=3, is_aligned=False, alignment_reason="2 vs 3"
    )
    assert order_problems(order)[0] == "model_input_order has 2 names but the model takes 3 features"
    unknown = FactorOrder.model_construct(model_input_order=["a"], model_feature_count=None, alignment_reason="torch")
    assert "feature count is unknown: torch" in order_problems(unknown)[0]


def test_failed_runs_are_tagged_with_the_fingerprint(tmp_path: Path) -> None:
    log_root = _fixture_task(tmp_path, weights=None)
    resources = chain_resources(tmp_path, log_root, _map(tmp_path))
    with instance_for_test() as instance:
        result = materialize_task(instance, resources, TASK, tags={FINGERPRINT_TAG: "1-2-3"})
        run = instance.get_run_by_id(result.run_id)
    assert run.status.value == "FAILURE" and run.tags[FINGERPRINT_TAG] == "1-2-3"
    assert run.tags["dagster/partition"] == TASK
    assert AssetKey("aistock_bundle") not in {e.asset_key for e in result.get_asset_materialization_events()}


def test_weight_source_problems_catch_a_weight_that_is_not_where_it_claims(tmp_path: Path) -> None:
    log_dir = SAMPLES / "log" / SAMPLE
    reading = read_task(log_dir, index=SnapshotIndex(None))
    assert reading.chosen is not None
    weight = reading.chosen.require_weight()
    assert weight_source_problems(weight, reading.anchor) == []
    moved = weight.info.model_copy(update={"hist_index": 1, "sub_workspace_index": 2})
    problems = weight_source_problems(ModelWeight(info=moved, data=weight.data), reading.anchor)
    assert any("trace.hist[1]" in p for p in problems)
    assert any("sub_workspace_list[2]" in p for p in problems)
    swapped = ModelWeight(info=weight.info, data=weight.data[:-1] + b"\x00")
    assert any("sha256" in p for p in weight_source_problems(swapped, reading.anchor))


def test_no_accepted_factor_experiment_stops_at_last_sota_factor_exp(tmp_path: Path) -> None:
    rejected = ExperimentSpec(factors=[FactorSpec("Mom_10D")], decision=False, weights={"model.pkl": b"w"})
    log_root = tmp_path / "log"
    write_task(log_root, TASK, growing_timeline(2), hist=[rejected, rejected])
    resources = chain_resources(tmp_path, log_root, _map(tmp_path))
    with instance_for_test() as instance:
        result = materialize_task(instance, resources, TASK)
        snapshot = instance.fetch_materializations(AssetKey("session_snapshot"), limit=1).records[0]
    assert not result.success
    assert materialized(result) == ["session_snapshot"]
    assert "no_sota_factor_experiment" in snapshot.asset_materialization.metadata["anchor_error"].value
    error, metadata = step_failure(result)
    assert "no_sota_factor_experiment" in error
    assert (metadata["asset"], metadata["error_code"]) == ("last_sota_factor_exp", "no_sota_factor_experiment")
    assert current_version_dir(resources["bundle_store"].path, TASK) is None


def test_checks_of_stages_never_reached_are_not_reported(tmp_path: Path) -> None:
    """A run that stops at model_weight reports only that check; the later ones did not run and are not failed.

    Dagster keeps them PLANNED, and shows a PLANNED check of a failed run as "execution failed", not "failed".
    """
    log_root = _fixture_task(tmp_path, weights=None)
    resources = chain_resources(tmp_path, log_root, _map(tmp_path))
    with instance_for_test() as instance:
        result = materialize_task(instance, resources, TASK)
        assert set(checks_of(result)) == {"model_weight_source_is_factor_exp"}
        for asset, name in [("factor_order", "factor_order_matches_model"), ("aistock_bundle", "bundle_integrity")]:
            (record,) = instance.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(AssetKey(asset), name), limit=1
            )
            assert (record.status.value, record.partition) == ("PLANNED", TASK)  # planned, never evaluated
            assert instance.get_run_by_id(record.run_id).status == DagsterRunStatus.FAILURE


def test_a_partition_key_that_is_not_a_task_id_fails_typed_and_touches_nothing(tmp_path: Path) -> None:
    resources = chain_resources(tmp_path, SAMPLES / "log")
    with instance_for_test() as instance:
        result = materialize_task(instance, resources, "../" + SAMPLE)
    assert not result.success and materialized(result) == []
    error, metadata = step_failure(result)
    assert metadata["error_code"] == "invalid_log_dir" and "not a safe task id" in error
    assert not (tmp_path / "store").exists() and not (tmp_path / "index").exists()
