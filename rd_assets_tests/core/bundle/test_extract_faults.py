"""Every way a task can be incomplete ends in one clear outcome: a typed error, or a published not-ready bundle.

Decisions (see rd_assets/extract.py): a missing weight and an order that does not match the model (count
mismatch, parquet missing, placeholder Alpha158 names) fail the extract unless ``allow_incomplete``; factor code
without its function never fails, the bundle is published with ``selection_ready: false``. A failed extract
never touches the previously published bundle.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.bundle.extract import ExtractOutcome, extract_task
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.bundle_models import FACTOR_ORDER, MANIFEST, ExtractReport
from rd_assets.core.errors import (
    BundleStoreError,
    FactorParquetNotFoundError,
    FeatureCountMismatchError,
    NoSotaFactorExperimentError,
    RdAssetsError,
    WeightsNotPersistedError,
)
from rd_assets.core.session.index import SnapshotIndex
from rd_assets_tests.bundle_testkit import GENERATED_TASK, GeneratedTask, generated_task, load_json, tree_state
from rd_assets_tests.rdagent_fixtures import (
    ExperimentSpec,
    FactorSpec,
    default_yaml_files,
    growing_timeline,
    write_task,
)


def _extract(task: GeneratedTask, store: Path, *, allow_incomplete: bool = False) -> ExtractOutcome:
    return extract_task(
        task.log_dir,
        store=store,
        path_map=task.path_map,
        index=SnapshotIndex(None),
        allow_incomplete=allow_incomplete,
    )


def _fails(task: GeneratedTask, store: Path, error: type[RdAssetsError]) -> RdAssetsError:
    with pytest.raises(error) as caught:
        _extract(task, store)
    assert not (store / GENERATED_TASK).exists()
    return caught.value


def _not_ready(task: GeneratedTask, store: Path, *reason_codes: str) -> ExtractOutcome:
    outcome = _extract(task, store, allow_incomplete=True)
    manifest = outcome.content.manifest
    assert not manifest.selection_ready and [r.split(":")[0] for r in manifest.reasons] == list(reason_codes)
    assert load_json(store / GENERATED_TASK / MANIFEST)["selection_ready"] is False
    verified = verify_bundle(store / GENERATED_TASK)
    assert verified.ok, verified.problems
    return outcome


def test_a_complete_generated_task_is_ready(tmp_path: Path) -> None:
    task = generated_task(tmp_path)
    outcome = _extract(task, tmp_path / "store")
    assert outcome.content.manifest.selection_ready
    order = load_json(tmp_path / "store" / GENERATED_TASK / FACTOR_ORDER)
    assert order["dynamic_factors"] == task.factor_names and order["model_feature_count"] == 23
    assert outcome.content.manifest.task_run_id == "run-1"


def test_weight_missing(tmp_path: Path) -> None:
    task = generated_task(tmp_path, weights=False)
    err = _fails(task, tmp_path / "store", WeightsNotPersistedError)
    assert err.code == "weights_not_persisted" and "trace.hist[1]" in err.message and "factor.py" in err.message
    outcome = _not_ready(task, tmp_path / "store", "weights_not_persisted", "factor_order_not_aligned")
    assert "feature count is unknown" in outcome.content.manifest.reasons[1]
    assert "model.pkl" not in outcome.content.files and "model.txt" not in outcome.content.files
    assert outcome.report.weight is None and outcome.report.weight_error is not None
    assert outcome.report.weight_error.code == "weights_not_persisted"
    assert outcome.content.manifest.sota_factor_anchor.resolved_model_weight_key is None


def test_parquet_missing(tmp_path: Path) -> None:
    task = generated_task(tmp_path, write_parquet=False)
    err = _fails(task, tmp_path / "store", FactorParquetNotFoundError)
    assert err.code == "factor_parquet_not_found" and "cannot be confirmed" in err.message
    assert f"{task.parquet} not found" in err.message
    outcome = _not_ready(task, tmp_path / "store", "factor_order_not_aligned")
    order = load_json(tmp_path / "store" / GENERATED_TASK / FACTOR_ORDER)
    assert order["dynamic_factors"] is None and order["model_input_order"] is None
    assert order["dynamic_unresolved_reason"].startswith(f"{task.parquet} not found (pickled workspace_path ")
    assert order["unresolved_code"] == "factor_parquet_not_found"
    assert outcome.report.paths_opened_outside_session == [str(task.parquet)]


def test_feature_count_mismatch_states_both_counts(tmp_path: Path) -> None:
    task = generated_task(tmp_path, model_features=25)
    err = _fails(task, tmp_path / "store", FeatureCountMismatchError)
    assert "23 names" in err.message and "25 features" in err.message
    outcome = _not_ready(task, tmp_path / "store", "factor_order_not_aligned")
    assert outcome.report.alignment_error is not None and "25 features" in outcome.report.alignment_error.message
    order = load_json(tmp_path / "store" / GENERATED_TASK / FACTOR_ORDER)
    assert len(order["model_input_order"]) == 23 and order["model_feature_count"] == 25  # nothing padded


def test_yaml_with_placeholder_names(tmp_path: Path) -> None:
    files = default_yaml_files()
    dynamic = files["conf_combined_factors_dynamic.yaml"]
    names_line = next(line for line in dynamic.splitlines() if '"RESI5"' in line)
    indent = names_line[: len(names_line) - len(names_line.lstrip())]
    files["conf_combined_factors_dynamic.yaml"] = dynamic.replace(names_line, f"{indent}- {{{{ feature_names }}}}")
    task = generated_task(tmp_path, yaml_files=files)
    err = _fails(task, tmp_path / "store", FeatureCountMismatchError)
    assert "placeholder" in err.message and "{{ feature_names }}" in err.message
    _not_ready(task, tmp_path / "store", "factor_order_not_aligned")


def test_factor_code_without_its_function_is_published_not_ready(tmp_path: Path) -> None:
    broken = FactorSpec("Volatility_5D", code="import pandas as pd\n\n\ndef helper():\n    return 1\n")
    task = generated_task(tmp_path, anchor_factors=(FactorSpec("Momentum_10D"), broken))
    outcome = _extract(task, tmp_path / "store")  # no allow_incomplete needed
    manifest = outcome.content.manifest
    assert outcome.publish.changed and not manifest.selection_ready
    assert len(manifest.reasons) == 1 and manifest.reasons[0].startswith("factor_code_incomplete: Volatility_5D")
    assert [i.split(":")[0] for i in outcome.report.factor_code_incomplete] == ["Volatility_5D"]
    report = ExtractReport.model_validate(load_json(tmp_path / "store" / GENERATED_TASK / "extract_report.json"))
    assert report.factor_code_incomplete == outcome.report.factor_code_incomplete
    assert (tmp_path / "store" / GENERATED_TASK / "factors" / "Volatility_5D.py").read_text() == broken.code
    assert verify_bundle(tmp_path / "store" / GENERATED_TASK).ok


def test_no_accepted_factor_experiment(tmp_path: Path) -> None:
    hist = [ExperimentSpec(factors=[FactorSpec("A")], decision=False), ExperimentSpec(kind="model", decision=True)]
    log_dir = write_task(tmp_path / "log", GENERATED_TASK, growing_timeline(2), hist=hist)
    with pytest.raises(NoSotaFactorExperimentError):
        extract_task(log_dir, store=tmp_path / "store", path_map=PathMap.parse([]), index=SnapshotIndex(None))
    assert not (tmp_path / "store" / GENERATED_TASK).exists()


def test_a_failed_extract_leaves_the_published_bundle_alone(tmp_path: Path) -> None:
    store = tmp_path / "store"
    good = _extract(generated_task(tmp_path / "good"), store)
    bad = generated_task(tmp_path / "bad", weights=False)  # the same task id, now without weights
    with pytest.raises(WeightsNotPersistedError):
        _extract(bad, store)
    report = verify_bundle(store / GENERATED_TASK)
    assert report.ok and report.content_hash == good.publish.content_hash


def test_the_store_may_not_live_inside_the_log_dir(tmp_path: Path) -> None:
    task = generated_task(tmp_path)
    before = tree_state(task.log_dir)
    with pytest.raises(BundleStoreError, match="inside the log dir"):
        _extract(task, task.log_dir / "bundles")
    assert tree_state(task.log_dir) == before
