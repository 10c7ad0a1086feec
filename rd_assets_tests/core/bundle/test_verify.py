"""verify_bundle finds every kind of damage, each as a precise problem, and passes genuine bundles."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rd_assets.core.bundle.assemble import json_bytes
from rd_assets.core.bundle.store import publish_bundle
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.bundle_models import EXTRACT_REPORT, FACTOR_ORDER, MANIFEST, MODEL_TXT, Manifest
from rd_assets_tests.bundle_testkit import rehashed, sample_parts, tree_bytes, write_tree
from rd_assets_tests.conftest import PLAIN_TASK, SIGNED_TASK, expected_for


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("verify-store")
    for task in (PLAIN_TASK, SIGNED_TASK):
        publish_bundle(store, sample_parts(task).assemble())
    return store


@pytest.fixture
def copy_of(published: Path, tmp_path: Path) -> Callable[[str], Path]:
    """A writable copy of one published version dir (verify accepts version dirs as well)."""

    def copy(task: str) -> Path:
        target = tmp_path / "v"
        shutil.copytree(published / task, target)
        return target

    return copy


def _edit(version: Path, rel: str, data: bytes, *, rehash: bool) -> None:
    """Change one file; with ``rehash`` the manifest is updated so only the semantic check can object."""
    files = tree_bytes(version)
    files[rel] = data
    if rehash:
        files = rehashed(files).files
    write_tree(version, files)


@pytest.mark.parametrize("task", [PLAIN_TASK, SIGNED_TASK])
def test_published_samples_verify(published: Path, task: str) -> None:
    report = verify_bundle(published / task)
    assert report.ok, report.problems
    assert report.task_id == task and report.checked_files == len(list((published / task).rglob("*.*")))
    loaded = "loaded with lightgbm" if expected_for(task)["model_txt_expected"] else "model.safetensors parsed"
    assert any(loaded in n for n in report.notes)
    assert verify_bundle(Path(report.version_dir)).ok


def test_a_changed_byte_is_found(copy_of: Callable[[str], Path]) -> None:
    v = copy_of(PLAIN_TASK)
    data = bytearray((v / "model.pkl").read_bytes())
    data[100] ^= 1
    (v / "model.pkl").write_bytes(bytes(data))
    problems = verify_bundle(v).problems
    assert len(problems) == 1 and problems[0].startswith("model.pkl: sha256/size")


def test_missing_and_extra_files_are_found(copy_of: Callable[[str], Path]) -> None:
    v = copy_of(PLAIN_TASK)
    (v / "factor_entry.py").unlink()
    (v / "factors" / "intruder.py").write_text("x = 1\n")
    problems = verify_bundle(v).problems
    assert "factor_entry.py: listed in the manifest but missing" in problems
    assert "factors/intruder.py: present but not listed in the manifest" in problems


def test_a_wrong_content_hash_is_found(copy_of: Callable[[str], Path]) -> None:
    v = copy_of(PLAIN_TASK)
    manifest = Manifest.model_validate_json((v / MANIFEST).read_bytes())
    (v / MANIFEST).write_bytes(json_bytes(manifest.model_copy(update={"content_hash": "0" * 64})))
    assert [p for p in verify_bundle(v).problems if "content_hash" in p]


def test_a_document_breaking_its_schema_is_found(copy_of: Callable[[str], Path]) -> None:
    v = copy_of(PLAIN_TASK)
    doc = json.loads((v / FACTOR_ORDER).read_bytes())
    doc["padded_features"] = 3
    _edit(v, FACTOR_ORDER, json.dumps(doc).encode(), rehash=True)
    problems = verify_bundle(v).problems
    assert problems[0].startswith(f"{FACTOR_ORDER}: does not match FactorOrder: 1 error(s)")
    assert "padded_features" in problems[0]
    assert problems[1:] == [f"{MANIFEST}: selection_ready but the factor order is not aligned"]


def test_an_alignment_claim_is_recomputed(copy_of: Callable[[str], Path]) -> None:
    v = copy_of(SIGNED_TASK)
    doc = json.loads((v / FACTOR_ORDER).read_bytes())
    doc["model_input_order"] = doc["factor_order"] = doc["model_input_order"][:-1]  # both names, as one writer would
    doc["model_input_count"] -= 1
    _edit(v, FACTOR_ORDER, json.dumps(doc).encode(), rehash=True)
    problems = verify_bundle(v).problems
    assert any("model_input_order is not what" in p for p in problems)
    assert any("is_aligned True but 22 names for model_feature_count 23" in p for p in problems)
    assert any("first layer input_layer.weight [64, 23] does not take 22 inputs" in p for p in problems)
    assert len(problems) == 3


def test_a_corrupt_model_txt_is_found_by_lightgbm(copy_of: Callable[[str], Path]) -> None:
    v = copy_of(PLAIN_TASK)
    text = (v / MODEL_TXT).read_bytes().replace(b"max_feature_idx=24", b"max_feature_idx=30")
    _edit(v, MODEL_TXT, text, rehash=True)
    problems = verify_bundle(v).problems
    assert any(p.startswith(f"{MODEL_TXT}: sha256 differs from the report") for p in problems)
    assert any(p.startswith(f"{MODEL_TXT}: lightgbm") for p in problems), problems


def test_readiness_without_weight_is_found(copy_of: Callable[[str], Path]) -> None:
    v = copy_of(SIGNED_TASK)
    files = tree_bytes(v)
    del files["params.pkl"]
    shutil.rmtree(v)
    write_tree(v, rehashed(files).files)
    problems = verify_bundle(v).problems
    assert f"{MANIFEST}: selection_ready without a model weight file" in problems
    assert f"{MANIFEST}: primary asset model_weight -> params.pkl is not a bundle file" in problems


def test_a_report_disagreeing_with_the_weight_is_found(copy_of: Callable[[str], Path]) -> None:
    v = copy_of(SIGNED_TASK)
    doc = json.loads((v / EXTRACT_REPORT).read_bytes())
    doc["weight"]["sha256"] = "f" * 64
    _edit(v, EXTRACT_REPORT, json.dumps(doc).encode(), rehash=True)
    assert verify_bundle(v).problems == ["params.pkl: sha256 differs from the weight's recorded sha256"]


def test_symlinks_inside_a_bundle_are_problems(copy_of: Callable[[str], Path]) -> None:
    v = copy_of(PLAIN_TASK)
    (v / "factors" / "link.py").symlink_to("/etc/passwd")
    assert "factors/link.py: a symlink inside a bundle" in verify_bundle(v).problems


def test_not_a_bundle(tmp_path: Path) -> None:
    report = verify_bundle(tmp_path / "nothing")
    assert not report.ok and report.problems[0].startswith("bundle_integrity: not a bundle directory")
    (tmp_path / "empty").mkdir()
    assert verify_bundle(tmp_path / "empty").problems == [f"{MANIFEST}: missing"]


def test_a_task_link_outside_the_store_layout_is_refused(tmp_path: Path, published: Path) -> None:
    (tmp_path / PLAIN_TASK).symlink_to(published / PLAIN_TASK)  # absolute, not .versions/<task>/<version>
    report = verify_bundle(tmp_path / PLAIN_TASK)
    assert not report.ok and "points outside its versions" in report.problems[0]
    (tmp_path / "_latest").symlink_to(published / PLAIN_TASK)  # a non-task name: taken as a version dir
    assert verify_bundle(tmp_path / "_latest").ok
