"""Both genuine samples end to end: the published bundle equals the ground truth, twice, byte for byte."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import lightgbm
import numpy as np
import pytest

from rd_assets.core.bundle.assemble import sha256_hex
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.artifact_models import FactorOrder
from rd_assets.core.contracts.bundle_models import (
    FACTOR_ORDER,
    MANIFEST,
    MODEL_TXT,
    SOTA_FACTORS,
    ExtractReport,
    SotaFactorsDoc,
)
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.index import SnapshotIndex
from rd_assets_tests.bundle_testkit import extract_sample, load_json, tree_bytes, tree_state
from rd_assets_tests.conftest import SAMPLE_TASKS, SAMPLES, expected_for


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_sample_bundle_matches_the_expected_answers(tmp_path: Path, task: str) -> None:
    expected = expected_for(task)
    outcome = extract_sample(task, tmp_path / "store")
    bundle = tmp_path / "store" / task
    assert outcome.publish.changed and outcome.publish.bundle_path == bundle

    manifest = load_json(bundle / MANIFEST)
    assert manifest["task_id"] == task
    assert manifest["session_anchor"]["chosen_session_file"] == expected["chosen_snapshot_relpath"]
    assert manifest["session_anchor"]["hist_len"] == expected["hist_len"]
    assert manifest["session_anchor"]["tied_snapshots"] == expected["chosen_snapshot_relpaths"]
    assert manifest["sota_factor_anchor"]["last_sota_factor_index"] == expected["last_sota_factor_index"]
    assert manifest["sota_factor_anchor"]["resolved_model_weight_key"] == expected["weights_key"]
    assert manifest["sota_factor_anchor"]["resolved_model_weight_source"] == "factor_exp"
    assert manifest["selection_ready"] is True and manifest["reasons"] == []

    weight = (bundle / expected["weights_key"]).read_bytes()
    assert (sha256_hex(weight), len(weight)) == (expected["weights_sha256"], expected["weights_bytes"])
    report = ExtractReport.model_validate_json((bundle / "extract_report.json").read_bytes())
    assert report.weight is not None and report.weight.location == expected["weights_location"]

    sota = SotaFactorsDoc.model_validate_json((bundle / SOTA_FACTORS).read_bytes())
    assert [f.name for f in sota.factors] == expected["sota_factor_names"]
    for factor, want in zip(sota.factors, expected["factors"], strict=True):
        assert (factor.name, factor.hist_index, factor.formulation) == (
            want["name"],
            want["hist_index"],
            want["formulation"],
        )
        assert sha256_hex((bundle / sota.code_relpaths[factor.name]).read_bytes()) == want["factor_py_sha256"]

    order = FactorOrder.model_validate_json((bundle / FACTOR_ORDER).read_bytes())
    assert order.dynamic_factors == expected["dynamic_factors"]
    assert order.alpha158_factors == expected["alpha158_factors"]
    assert order.model_input_order == expected["model_input_order"]
    assert order.config_name == expected["executed_config"]
    assert order.model_feature_count == expected["model_feature_count"] and order.is_aligned

    assert order.alpha158_source == expected["alpha158_factors_source"]
    meta = load_json(bundle / "model_meta.json")
    assert meta["weight_class_path"] == expected["model_class"] and meta["config_name"] == expected["executed_config"]
    if expected["model_txt_expected"]:
        booster = lightgbm.Booster(model_file=str(bundle / MODEL_TXT))
        assert booster.num_feature() == expected["model_feature_count"]
    else:
        assert not (bundle / MODEL_TXT).exists()
        assert meta["network_class"] == expected["model_network_class"]
        assert sha256_hex((bundle / "model.py").read_bytes()) == expected["anchor_model_py_sha256"]
        first = report.model.first_layer_shape if report.model else None
        assert first == expected["model_first_layer_shape"]
    parquet = SAMPLES / "workspaces" / expected["anchor_parquet_relpath"]
    assert report.paths_opened_outside_session == [str(parquet)] and report.access_violations == []

    verified = verify_bundle(bundle)
    assert verified.ok, verified.problems


def test_model_txt_predicts_like_the_pickled_booster(tmp_path: Path) -> None:
    """The sample bare Booster pickle and our model.txt export of the same LGBModel agree on predictions."""
    import pickle

    from rd_assets.core.artifacts.model_introspection import introspect_model

    exported = introspect_model((SAMPLES / "models" / "params.pkl").read_bytes())
    assert exported.model_txt is not None
    from_txt = lightgbm.Booster(model_str=exported.model_txt)
    from_pickle = pickle.loads((SAMPLES / "models" / "booster.pkl").read_bytes())  # trusted test data, real lightgbm
    x = np.random.default_rng(0).standard_normal((50, from_pickle.num_feature()))
    np.testing.assert_array_equal(from_txt.predict(x), from_pickle.predict(x))


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_second_extract_is_byte_identical_and_a_no_op(tmp_path: Path, task: str) -> None:
    index = SnapshotIndex(tmp_path / "idx.sqlite")
    first = extract_sample(task, tmp_path / "store", index=index)
    files_before = tree_bytes(tmp_path / "store" / task)
    second = extract_sample(task, tmp_path / "store", index=index)  # warm index: fewer snapshots unpickled
    assert second.report.run is not None and first.report.run is not None
    assert second.report.run.unpickled_snapshots < first.report.run.unpickled_snapshots
    assert not second.publish.changed and second.publish.version_dir == first.publish.version_dir
    assert second.publish.content_hash == first.publish.content_hash
    assert tree_bytes(tmp_path / "store" / task) == files_before
    assert {k: v for k, v in second.content.files.items() if k != MANIFEST} == {
        k: v for k, v in first.content.files.items() if k != MANIFEST
    }
    elsewhere = extract_sample(task, tmp_path / "other-store")  # cold, another store: same bytes
    assert elsewhere.publish.changed and elsewhere.publish.content_hash == first.publish.content_hash
    other_files = tree_bytes(tmp_path / "other-store" / task)
    assert {k: v for k, v in other_files.items() if k != MANIFEST} == {
        k: v for k, v in files_before.items() if k != MANIFEST
    }
    index.close()


def _make_read_only(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_a_read_only_log_dir_extracts_and_is_left_untouched(
    tmp_path: Path, copy_sample: Callable[[str], Path], task: str
) -> None:
    """chmod -R a-w on a copy; since root may write anyway, the tree's state is also compared before/after."""
    log_dir = copy_sample(task)
    _make_read_only(log_dir)
    before = tree_state(log_dir)
    try:
        access = AccessLog()
        outcome = extract_sample(task, tmp_path / "store", log_dir=log_dir, access=access)
        assert outcome.content.manifest.selection_ready
        assert access.violations(log_dir, set(outcome.report.paths_opened_outside_session)) == []
        assert tree_state(log_dir) == before
        reference = extract_sample(task, tmp_path / "reference-store")
        assert outcome.publish.content_hash == reference.publish.content_hash
    finally:
        _make_writable(log_dir)
        shutil.rmtree(log_dir)
