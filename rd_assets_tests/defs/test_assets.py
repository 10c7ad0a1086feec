"""The genuine samples through the real Dagster job: six assets, six checks, a bundle equal to the truth."""

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    IntMetadataValue,
    TextMetadataValue,
    instance_for_test,
)

from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.bundle.extract import extract_task
from rd_assets.core.contracts.bundle_models import Manifest, SotaFactorsDoc
from rd_assets.core.samples import SAMPLE_PATH_MAP, SAMPLE_TASKS, SAMPLES_DIR
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.definitions import build_definitions
from rd_assets.defs.overview import cell
from rd_assets.defs.partitions import RD_TASK_PARTITIONS_NAME
from rd_assets.defs.resources import BundleStore, RdLogRoot

SAMPLES = SAMPLES_DIR
ASSET_NAMES = [
    "session_snapshot",
    "last_sota_factor_exp",
    "model_weight",
    "factor_order",
    "factor_code",
    "aistock_bundle",
]
CHECK_NAMES = {
    "model_weight_source_is_factor_exp",
    "no_workspace_traversal",
    "factor_order_matches_model",
    "factor_code_complete",
    "bundle_integrity",
    "selection_ready",
}


def chain_resources(tmp: Path, log_root: Path, path_map: list[str] | None = None) -> dict[str, Any]:
    """Resources of the chain with everything written under ``tmp`` (never under the log root)."""
    store = BundleStore(store_dir=str(tmp / "store"))
    root = RdLogRoot(
        log_root=str(log_root),
        path_map=";".join([SAMPLE_PATH_MAP] if path_map is None else path_map),
        index_path=str(tmp / "index" / "snapshot-index.sqlite3"),
    )
    return {"rd_log_root": root, "bundle_store": store}


def materialize_task(
    instance: DagsterInstance, resources: Mapping[str, Any], task_id: str, tags: Mapping[str, str] | None = None
) -> ExecuteInProcessResult:
    """One run of the code location's own ``rd_task_job`` for ``task_id``, as the sensor would request it."""
    if not instance.has_dynamic_partition(RD_TASK_PARTITIONS_NAME, task_id):
        instance.add_dynamic_partitions(RD_TASK_PARTITIONS_NAME, [task_id])
    job = build_definitions(resources["rd_log_root"], resources["bundle_store"]).resolve_job_def("rd_task_job")
    return job.execute_in_process(partition_key=task_id, instance=instance, raise_on_error=False, tags=tags)


def checks_of(result: ExecuteInProcessResult) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def step_failure(result: ExecuteInProcessResult) -> tuple[str, dict[str, Any]]:
    """The one step failure of a failed run: its error text and the typed metadata of its ``Failure``."""
    (event,) = [e for e in result.all_events if e.is_step_failure]
    data = event.step_failure_data
    assert data.user_failure_data is not None, "a typed error ends the step with a dagster.Failure"
    return data.error.to_string(), {k: v.value for k, v in data.user_failure_data.metadata.items()}


def materialized(result: ExecuteInProcessResult) -> list[str]:
    return [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DagsterInstance, dict, dict]]:
    """Every sample materialized once; the signing key is configured, so the signed sample is verified, and the
    plain samples are read under the explicit opt-out (a key alone refuses plain runs)."""
    tmp = tmp_path_factory.mktemp("chain")
    resources = chain_resources(tmp, SAMPLES / "log")
    signing_key = json.loads((SAMPLES / "expected" / f"{SAMPLE_TASKS[1]}.expected.json").read_text())["signing_key"]
    with pytest.MonkeyPatch.context() as env, instance_for_test() as instance:
        env.setenv("RD_ASSETS_SIGNING_KEY", signing_key)
        env.setenv("RD_ASSETS_ALLOW_UNSIGNED", "1")
        results = {task: materialize_task(instance, resources, task) for task in SAMPLE_TASKS}
        yield instance, resources, results


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_all_six_assets_and_all_checks_pass(chain: tuple, task_id: str) -> None:
    _, _, results = chain
    result = results[task_id]
    assert result.success
    assert materialized(result) == ASSET_NAMES
    checks = checks_of(result)
    assert set(checks) == CHECK_NAMES
    assert {name: ev.passed for name, ev in checks.items()} == dict.fromkeys(CHECK_NAMES, True)


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_bundle_matches_the_expected_json(chain: tuple, task_id: str) -> None:
    _, resources, _ = chain
    expected = json.loads((SAMPLES / "expected" / f"{task_id}.expected.json").read_text())
    bundle = resources["bundle_store"].path / task_id
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    assert manifest.selection_ready and manifest.reasons == []
    assert manifest.session_anchor.chosen_session_file == expected["chosen_snapshot_relpath"]
    assert manifest.session_anchor.hist_len == expected["hist_len"]
    assert manifest.sota_factor_anchor.last_sota_factor_index == expected["last_sota_factor_index"]
    assert manifest.sota_factor_anchor.resolved_model_weight_key == expected["weights_key"]
    assert manifest.sota_factor_anchor.resolved_model_weight_source == "factor_exp"
    weight = (bundle / expected["weights_key"]).read_bytes()
    assert (sha(weight), len(weight)) == (expected["weights_sha256"], expected["weights_bytes"])
    sota = SotaFactorsDoc.model_validate_json((bundle / "sota_factors.json").read_bytes())
    assert [f.name for f in sota.factors] == expected["sota_factor_names"]
    for got, want in zip(sota.factors, expected["factors"], strict=True):
        assert (got.formulation, got.description, got.variables, got.hist_index) == (
            want["formulation"],
            want["description"],
            want["variables"],
            want["hist_index"],
        )
        assert sha((bundle / sota.code_relpaths[got.name]).read_bytes()) == want["factor_py_sha256"]
    order = json.loads((bundle / "factor_order.json").read_text())
    assert order["alpha158_factors"] == expected["alpha158_factors"]
    assert order["dynamic_factors"] == expected["dynamic_factors"]
    assert order["model_input_order"] == expected["model_input_order"]
    assert order["config_name"] == expected["executed_config"]
    assert order["model_feature_count"] == expected["model_feature_count"] and order["is_aligned"]
    if expected["model_txt_expected"]:
        assert (bundle / "model.txt").read_text().startswith("tree")
    else:
        assert (bundle / "model.safetensors").is_file() and (bundle / "model.py").is_file()


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_dagster_publishes_the_same_content_as_the_cli_extract(chain: tuple, task_id: str, tmp_path: Path) -> None:
    _, resources, results = chain
    outcome = extract_task(
        SAMPLES / "log" / task_id,
        store=tmp_path / "cli_store",
        path_map=PathMap.parse([SAMPLE_PATH_MAP]),
        index=SnapshotIndex(None),
        signing_key=json.loads((SAMPLES / "expected" / f"{task_id}.expected.json").read_text()).get("signing_key"),
    )
    bundle = resources["bundle_store"].path / task_id
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    mat = next(
        e for e in results[task_id].get_asset_materialization_events() if e.asset_key == AssetKey("aistock_bundle")
    )
    assert mat.step_materialization_data.materialization.metadata["content_hash"].value == manifest.content_hash
    assert manifest.content_hash == outcome.publish.content_hash
    assert outcome.content.files.keys() == manifest.files.keys() | {"manifest.json"}


def test_materializations_carry_the_metadata_people_read(chain: tuple) -> None:
    instance, resources, _ = chain
    task_id = SAMPLE_TASKS[1]

    def meta(asset: str) -> dict[str, Any]:
        event = instance.get_latest_materialization_event(AssetKey(asset))
        assert event is not None
        records = instance.fetch_materializations(AssetKey(asset), limit=10).records
        mat = next(r.asset_materialization for r in records if r.asset_materialization.partition == task_id)
        return {k: v.value for k, v in mat.metadata.items()}

    snap = meta("session_snapshot")
    assert snap["chosen_snapshot"] == "__session__/5/4_record" and snap["hist_len"] == 6
    assert snap["candidates"] == 30 and snap["skipped"] == 0
    assert snap["signature"] == "verified" and snap["file_format"] == "signed"
    assert all("/__session__/" in p for p in snap["paths_opened"])
    anchor = meta("last_sota_factor_exp")
    assert anchor["anchor_hist_index"] == 3 and anchor["factor_count"] == len(anchor["factor_names"])
    weight = meta("model_weight")
    expected = json.loads((SAMPLES / "expected" / f"{task_id}.expected.json").read_text())
    assert (weight["weight_key"], weight["weight_source"], weight["weight_size"]) == (
        expected["weights_key"],
        "factor_exp",
        expected["weights_bytes"],
    )
    assert weight["weight_sha256"] == expected["weights_sha256"]
    order = meta("factor_order")
    assert order["model_feature_count"] == 23 and order["is_aligned"] is True
    assert order["model_input_count"] == 23 and order["alignment_reason"] is None
    assert order["model_input_order_rule"] == "sorted_union"
    assert order["alpha_source"] == "trace.hist[3][0].base_features"
    assert order["paths_opened"] == [order["anchor_parquet"]]
    bundle = meta("aistock_bundle")
    assert bundle["selection_ready"] is True and bundle["reasons"] == []
    assert Path(bundle["bundle_path"]) == resources["bundle_store"].path / task_id
    assert len(bundle["content_hash"]) == 64

    factors = bundle["factors_table"].splitlines()
    assert factors[0] == "| factor | IC | annualized return | hist index | code file |"
    assert len(factors) == 2 + anchor["factor_count"]
    first = anchor["factor_names"][0]
    assert factors[2].startswith(f"| {cell(first)} | 0.0318 | 0.0667 | 0 | {cell(f'factors/{first}.py')} |")
    weight_row = bundle["weight_table"].splitlines()[2]
    assert expected["weights_sha256"] in weight_row and "| torch | 23 |" in weight_row
    order_row = bundle["order_table"].splitlines()[2]
    names = expected["model_input_order"]
    assert cell(expected["executed_config"]) in order_row and "sorted\\_union" in order_row
    assert cell(", ".join(names[:3])) in order_row and cell(", ".join(names[-3:])) in order_row
    candidates = bundle["candidates_table"].splitlines()
    assert len(candidates) == 2 + snap["candidates"]
    assert sum("(chosen)" in row for row in candidates) == 1 and cell("__session__/5/4_record") in candidates[-1]


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_metadata_is_typed(chain: tuple, task_id: str) -> None:
    """Counts are ints and absent values null: no "none", "unknown" or "unresolved" strings, no numbers as text."""
    instance, _, _ = chain
    for name in ASSET_NAMES:
        records = instance.fetch_materializations(AssetKey(name), limit=20).records
        mat = next(r.asset_materialization for r in records if r.asset_materialization.partition == task_id)
        for key, value in mat.metadata.items():
            if isinstance(value, TextMetadataValue):
                assert value.value not in {"none", "None", "null", "unknown", "unresolved", ""}, (name, key)
                assert not value.value.isdigit(), (name, key)
        for key in ("hist_len", "candidates", "weight_size", "model_feature_count", "factor_count", "files"):
            if key in mat.metadata:
                assert isinstance(mat.metadata[key], IntMetadataValue), (name, key)


def test_markdown_cells_cannot_break_the_table_or_inject_markup() -> None:
    hostile = "A|B <img src=x> `code` [link](http://x) *bold*\x1b[31m\u202e"
    escaped = cell(hostile)
    unescaped = re.sub(r"\\.", "", escaped)
    assert not set("|<>`[]()*") & set(unescaped)
    assert "\x1b" not in escaped and "\u202e" not in escaped and "\\x1b" in escaped
    assert cell(None) == "—"


def test_rematerializing_unchanged_content_is_a_no_op_publish(chain: tuple) -> None:
    instance, resources, _ = chain
    task_id = SAMPLE_TASKS[0]
    version_before = (resources["bundle_store"].path / task_id).resolve()
    again = materialize_task(instance, resources, task_id)
    assert again.success
    mat = next(e for e in again.get_asset_materialization_events() if e.asset_key == AssetKey("aistock_bundle"))
    metadata = mat.step_materialization_data.materialization.metadata
    assert metadata["changed"].value is False
    assert (resources["bundle_store"].path / task_id).resolve() == version_before
    record = resources["bundle_store"].publication(task_id)
    assert record is not None and record.run_id == again.run_id
