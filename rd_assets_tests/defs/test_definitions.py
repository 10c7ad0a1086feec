"""The one code location loads, has exactly the agreed names and wiring, and is configured from the env."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DefaultScheduleStatus, DefaultSensorStatus, Definitions

from rd_assets import definitions
from rd_assets.definitions import build_definitions, defs
from rd_assets.defs.partitions import rd_task_partitions
from rd_assets.defs.resources import DEFAULT_INDEX, DEFAULT_STORE, SAMPLES_DIR, BundleStore, RdLogRoot

REPO = Path(__file__).resolve().parents[2]
CHAIN = ["session_snapshot", "last_sota_factor_exp", "model_weight", "factor_order", "factor_code", "aistock_bundle"]
BLOCKING = {
    ("model_weight", "model_weight_source_is_factor_exp"): True,
    ("factor_order", "no_workspace_traversal"): True,
    ("factor_order", "factor_order_matches_model"): True,
    ("factor_code", "factor_code_complete"): False,
    ("aistock_bundle", "bundle_integrity"): False,
}


def test_validate_loadable() -> None:
    Definitions.validate_loadable(defs)


def test_dagster_cli_validates_the_code_location(tmp_path: Path) -> None:
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "rd_assets.definitions"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_six_partitioned_assets_each_depending_on_the_previous() -> None:
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == sorted(CHAIN)
    for previous, name in itertools.pairwise(CHAIN):
        node = graph.get(AssetKey(name))
        assert AssetKey(previous) in node.parent_keys, f"{name} must depend on {previous}"
        assert node.partitions_def == rd_task_partitions
    assert rd_task_partitions.name == "rd_task"


def test_checks_have_the_agreed_names_and_blocking_flags() -> None:
    graph = defs.resolve_asset_graph()
    keys = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert keys == set(BLOCKING)
    for (asset, name), blocking in BLOCKING.items():
        spec = graph.get_check_spec(AssetCheckKey(AssetKey(asset), name))
        assert spec.blocking is blocking, (asset, name)


def test_sensor_and_schedule_run_by_default() -> None:
    sensor = defs.resolve_sensor_def("rd_task_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert 15 <= sensor.minimum_interval_seconds <= 30
    schedule = defs.resolve_schedule_def("rd_task_backfill_schedule")
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "0 3 * * *"
    assert sensor.job_name == schedule.job_name == "rd_task_job"


def test_defaults_point_at_the_bundled_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RD_ASSETS_LOG_ROOT", "RD_ASSETS_PATH_MAP", "RD_ASSETS_STORE", "RD_ASSETS_INDEX"):
        monkeypatch.delenv(name, raising=False)
    root, store = RdLogRoot.from_env(), BundleStore.from_env()
    assert Path(root.log_root) == SAMPLES_DIR / "log" and (SAMPLES_DIR / "log").is_dir()
    mapped = root.parsed_path_map().map("/mnt/f/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace/abc/x.parquet")
    assert mapped == SAMPLES_DIR / "workspaces" / "abc" / "x.parquet"
    assert Path(store.store_dir) == DEFAULT_STORE == REPO / ".rd_assets_store"
    assert Path(root.index_path) == DEFAULT_INDEX
    assert store.keep_versions == 3


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RD_ASSETS_LOG_ROOT", str(tmp_path / "log"))
    monkeypatch.setenv("RD_ASSETS_PATH_MAP", "/a=/b; F:/x=/y ;")
    monkeypatch.setenv("RD_ASSETS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("RD_ASSETS_INDEX", str(tmp_path / "i.sqlite3"))
    monkeypatch.setenv("RD_ASSETS_KEEP_VERSIONS", "5")
    monkeypatch.setenv("RD_ASSETS_SIGNING_KEY", "k")
    root, store = RdLogRoot.from_env(), BundleStore.from_env()
    assert (root.log_root, root.path_map, root.index_path) == (
        str(tmp_path / "log"),
        ["/a=/b", "F:/x=/y"],
        str(tmp_path / "i.sqlite3"),
    )
    assert root.parsed_path_map().map("/mnt/f/x/q") == Path("/y/q")
    assert (store.store_dir, store.keep_versions) == (str(tmp_path / "store"), 5)
    assert root.signing_key() == "k"
    Definitions.validate_loadable(build_definitions(root, store))


def test_executor_is_selectable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RD_ASSETS_EXECUTOR", "multiprocess")
    assert definitions._executor().name == "multiprocess"
    monkeypatch.setenv("RD_ASSETS_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="RD_ASSETS_EXECUTOR"):
        definitions._executor()


def test_instance_and_workspace_files() -> None:
    import yaml

    instance = yaml.safe_load((REPO / "dagster.yaml").read_text())
    runs = instance["concurrency"]["runs"]  # the current block (run_coordinator.config is superseded)
    assert runs["max_concurrent_runs"] == 4
    limits = runs["tag_concurrency_limits"]
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert instance["telemetry"]["enabled"] is False
    assert instance["storage"]["sqlite"]["base_dir"] == {"env": "DAGSTER_HOME"}
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == "rd_assets.definitions"
    deploy = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert "postgresql+psycopg2" in str(deploy["storage"]["postgres"])


def test_the_instance_file_loads_as_a_queued_instance(tmp_path: Path) -> None:
    """dagster.yaml is read by Dagster itself: a queued run coordinator with the per-task limit."""
    import shutil

    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator

    shutil.copyfile(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAGSTER_HOME", str(tmp_path))
        instance = DagsterInstance.from_config(str(tmp_path))
        try:
            assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
            limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
            assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
        finally:
            instance.dispose()


def test_every_asset_carries_kinds_owners_code_version_and_its_source() -> None:
    """What a Dagster engineer reads in the UI: what the asset is made of, who owns it, which code made it."""
    from rd_assets import __version__

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.kinds and "python" in node.kinds, key
        assert node.owners == ["team:rd-assets"], key
        assert node.code_version is not None and node.code_version.startswith(__version__), key
        references = node.metadata.get("dagster/code_references")
        assert references is not None and references.code_references, key
