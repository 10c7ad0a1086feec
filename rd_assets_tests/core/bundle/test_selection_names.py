"""The selection system reads our bundles through its own field names; verify keeps those names honest.

Its sync code reads ``factor_order.json["factor_order"]`` and the manifest's ``primary_assets.*_relpath`` keys with
plain ``json.loads``; this test reads the published samples exactly that way, then proves that ``verify`` refuses a
bundle whose compat fields disagree with ours, and still passes a 1.1 bundle that has none.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rd_assets.core.bundle.extract import BundleParts
from rd_assets.core.bundle.store import publish_bundle
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.bundle_models import FACTOR_ORDER, MANIFEST, SELECTION_RELPATH_ROLES
from rd_assets.core.contracts.models import SCHEMA_VERSION
from rd_assets_tests.bundle_testkit import rehashed, sample_parts, tree_bytes, write_tree
from rd_assets_tests.conftest import SAMPLE_TASKS, expected_for


@pytest.fixture(scope="module")
def parts() -> dict[str, BundleParts]:
    return {task: sample_parts(task) for task in SAMPLE_TASKS}


@pytest.fixture(scope="module")
def store(parts: dict[str, BundleParts], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("selection-store")
    for content in parts.values():
        publish_bundle(root, content.assemble())
    return root


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_selection_system_field_paths(store: Path, parts: dict[str, BundleParts], task: str) -> None:
    expected = expected_for(task)
    task_dir = store / task
    manifest = json.loads((task_dir / "manifest.json").read_text(encoding="utf-8"))
    assets = manifest["primary_assets"]
    assert manifest["schema_version"] == SCHEMA_VERSION == "1.2"

    order_doc = json.loads((task_dir / assets["factor_order_relpath"]).read_text(encoding="utf-8"))
    assert order_doc["factor_order"] == expected["model_input_order"] == order_doc["model_input_order"]
    assert order_doc["alpha158_count"] == len(expected["alpha158_factors"])
    assert order_doc["dynamic_factor_count"] == len(expected["dynamic_factors"])
    assert order_doc["source_file"] == "combined_factors_df.parquet"
    assert order_doc["task_run_id"] == manifest["task_run_id"] == parts[task].anchor.task_run_id
    assert order_doc["loop_id"] == manifest["loop_id"] == manifest["session_anchor"]["loop_idx"]

    weight = task_dir / assets["model_weight_relpath"]
    assert assets["model_weight_relpath"] == expected["weights_key"]
    assert hashlib.sha256(weight.read_bytes()).hexdigest() == expected["weights_sha256"]
    assert (task_dir / assets["factor_entry_relpath"]).read_text(encoding="utf-8").strip()
    meta = json.loads((task_dir / assets["model_meta_relpath"]).read_text(encoding="utf-8"))
    assert meta["config_name"] == expected["executed_config"]
    assert assets["combined_factors_relpath"] is None

    assert assets["config_relpath"] == f"config/{expected['executed_config']}"
    config_text = (task_dir / assets["config_relpath"]).read_text(encoding="utf-8")
    assert config_text == parts[task].anchor.experiment_workspace_yaml[expected["executed_config"]]


@pytest.fixture
def version_copy(store: Path, tmp_path: Path) -> Callable[[str], Path]:
    def copy(task: str) -> Path:
        target = tmp_path / "v"
        shutil.copytree(store / task, target)
        return target

    return copy


def _rewrite_json(version: Path, rel: str, change: Callable[[dict], None]) -> None:
    """Edit one JSON document and rebuild the manifest's hashes, so only the compat checks can object."""
    files = tree_bytes(version)
    doc = json.loads(files[rel])
    change(doc)
    files[rel] = (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()
    write_tree(version, rehashed(files).files)


def _swap_first_two(doc: dict) -> None:
    doc["factor_order"][0], doc["factor_order"][1] = doc["factor_order"][1], doc["factor_order"][0]


def _edit_assets(key: str, value: str | None) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        doc["primary_assets"][key] = value

    return change


@pytest.mark.parametrize(
    ("rel", "change", "problem"),
    [
        (FACTOR_ORDER, _swap_first_two, "factor_order.json: factor_order"),
        (FACTOR_ORDER, lambda d: d.update(dynamic_factor_count=99), "factor_order.json: dynamic_factor_count 99"),
        (FACTOR_ORDER, lambda d: d.update(loop_id=0), "factor_order.json: loop_id 0"),
        (FACTOR_ORDER, lambda d: d.update(task_run_id="other"), "factor_order.json: task_run_id 'other'"),
        (FACTOR_ORDER, lambda d: d.update(source_file="x.parquet"), "factor_order.json: source_file 'x.parquet'"),
        (MANIFEST, _edit_assets("model_weight_relpath", "model.txt"), "primary_assets.model_weight_relpath"),
        (MANIFEST, _edit_assets("config_relpath", "factor_entry.py"), "config_relpath factor_entry.py"),
        (MANIFEST, lambda d: d["primary_assets"].pop("factor_order_relpath"), "factor_order_relpath is missing"),
        (MANIFEST, lambda d: d.update(loop_id=0), "manifest.json: loop_id 0"),
    ],
)
def test_verify_refuses_inconsistent_selection_names(
    version_copy: Callable[[str], Path], rel: str, change: Callable[[dict], None], problem: str
) -> None:
    version = version_copy(SAMPLE_TASKS[0])
    _rewrite_json(version, rel, change)
    problems = verify_bundle(version).problems
    assert any(p.startswith(problem) or problem in p for p in problems), problems


def test_a_1_1_bundle_without_compat_fields_still_verifies(version_copy: Callable[[str], Path]) -> None:
    version = version_copy(SAMPLE_TASKS[0])
    compat = ("factor_order", "dynamic_factor_count", "source_file", "task_run_id", "loop_id")
    files = tree_bytes(version)
    for rel in [r for r in files if r.endswith(".json") and r != MANIFEST]:
        doc = json.loads(files[rel])
        doc["schema_version"] = "1.1"
        if rel == FACTOR_ORDER:
            for key in compat:
                doc.pop(key)
        files[rel] = (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()
    manifest = json.loads(files[MANIFEST])
    manifest["schema_version"] = "1.1"
    manifest.pop("loop_id")
    for key in SELECTION_RELPATH_ROLES:
        manifest["primary_assets"].pop(key)
    files[MANIFEST] = json.dumps(manifest).encode()
    write_tree(version, rehashed(files).files)
    report = verify_bundle(version)
    assert report.ok, report.problems
