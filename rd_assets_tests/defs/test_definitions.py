"""The one code location loads, has exactly the agreed names and wiring, and is configured from the env."""

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterInvalidConfigError,
    DagsterResourceFunctionError,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    EnvVar,
    build_resources,
)
from dotenv import dotenv_values

from rd_assets.core.errors import BundleStoreError
from rd_assets.core.samples import SAMPLES_DIR
from rd_assets.definitions import build_definitions, defs
from rd_assets.defs.partitions import rd_task_partitions
from rd_assets.defs.resources import BundleStore, RdLogRoot

REPO = Path(__file__).resolve().parents[2]
CHAIN = ["session_snapshot", "last_sota_factor_exp", "model_weight", "factor_order", "factor_code", "aistock_bundle"]
BLOCKING = {
    ("model_weight", "model_weight_source_is_factor_exp"): True,
    ("factor_order", "no_workspace_traversal"): True,
    ("factor_order", "factor_order_matches_model"): True,
    ("factor_code", "factor_code_complete"): False,
    ("aistock_bundle", "bundle_integrity"): False,
    ("aistock_bundle", "selection_ready"): False,
}
ENV_VARS = ("RD_ASSETS_LOG_ROOT", "RD_ASSETS_PATH_MAP", "RD_ASSETS_STORE", "RD_ASSETS_INDEX", "RD_ASSETS_KEEP_VERSIONS")


def test_validate_loadable() -> None:
    Definitions.validate_loadable(defs)


def _dg() -> str:
    """The venv's ``dg``: on PATH when the venv is active, else next to this interpreter."""
    beside = Path(sys.executable).with_name("dg")
    found = shutil.which("dg", path=str(beside.parent)) or shutil.which("dg")
    assert found is not None, "dagster-dg-cli is not installed (pip install -e '.[test]')"
    return found


def test_dg_check_defs_loads_the_project(tmp_path: Path) -> None:
    """``[tool.dg.project]`` points ``dg`` at the one code location, and it loads cleanly (``dg check defs``
    supersedes ``dagster definitions validate``)."""
    shutil.copyfile(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    proc = subprocess.run(
        [_dg(), "check", "defs"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


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


def _resolved(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> tuple[RdLogRoot, BundleStore]:
    """The code location's own resources, resolved from ``env`` the way a run resolves them."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with build_resources(
        {"rd_log_root": defs.resources["rd_log_root"], "bundle_store": defs.resources["bundle_store"]}
    ) as resources:
        return resources.rd_log_root, resources.bundle_store


def test_env_example_points_at_the_bundled_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """``.env.example`` (what ``make dev`` copies to ``.env``) configures the samples, read from the repo root."""
    env = {k: v for k, v in dotenv_values(REPO / ".env.example").items() if v is not None}
    assert set(ENV_VARS) <= set(env)
    monkeypatch.chdir(REPO)  # dg dev and dagster dev run from the project root
    root, store = _resolved(monkeypatch, env)
    assert Path(root.log_root).resolve() == (SAMPLES_DIR / "log").resolve() and (SAMPLES_DIR / "log").is_dir()
    mapped = root.parsed_path_map().map("/mnt/f/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace/abc/x.parquet")
    assert mapped is not None
    assert mapped.resolve() == (SAMPLES_DIR / "workspaces" / "abc" / "x.parquet").resolve()
    assert Path(store.store_dir).resolve() == REPO / ".rd_assets_store"
    assert (
        root.index_file is not None
        and root.index_file.resolve() == REPO / ".rd_assets_index" / "snapshot-index.sqlite3"
    )
    assert store.keep_versions == 3
    # the signing key is never config: only the name of the variable it is read from at run time
    assert set(RdLogRoot.model_fields) == {"log_root", "path_map", "signing_key_env", "index_path"}


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root, store = _resolved(
        monkeypatch,
        {
            "RD_ASSETS_LOG_ROOT": str(tmp_path / "log"),
            "RD_ASSETS_PATH_MAP": "/a=/b; F:/x=/y ;",
            "RD_ASSETS_STORE": str(tmp_path / "store"),
            "RD_ASSETS_INDEX": str(tmp_path / "i.sqlite3"),
            "RD_ASSETS_KEEP_VERSIONS": "5",
            "RD_ASSETS_SIGNING_KEY": "k",
        },
    )
    assert (root.log_root, root.path_map_rules(), root.index_path) == (
        str(tmp_path / "log"),
        ["/a=/b", "F:/x=/y"],
        str(tmp_path / "i.sqlite3"),
    )
    assert root.parsed_path_map().map("/mnt/f/x/q") == Path("/y/q")
    assert (store.store_dir, store.keep_versions) == (str(tmp_path / "store"), 5)
    assert root.signing_key() == "k"
    Definitions.validate_loadable(build_definitions(root, store))


def test_settings_are_env_vars_resolved_at_run_time_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code location loads with no setting in the environment; a run without one fails naming it."""
    configured = [*vars(defs.resources["rd_log_root"]).values(), *vars(defs.resources["bundle_store"]).values()]
    assert {getattr(v, "env_var_name", None) for v in configured} - {None} == set(ENV_VARS)
    assert all(
        isinstance(v, EnvVar) for v in vars(defs.resources["rd_log_root"]).values() if hasattr(v, "env_var_name")
    )
    Definitions.validate_loadable(defs)
    with pytest.raises(DagsterInvalidConfigError, match="RD_ASSETS_STORE"):
        _resolved(monkeypatch, {name: "1" for name in ENV_VARS if name != "RD_ASSETS_STORE"})
    with pytest.raises(DagsterResourceFunctionError) as refused:
        _resolved(monkeypatch, {name: "0" for name in ENV_VARS})
    assert isinstance(refused.value.__cause__, BundleStoreError)
    assert "keep_versions is 0" in str(refused.value.__cause__)


def test_executor_is_dagsters_own_and_runs_default_to_in_process() -> None:
    """No rd-assets variable picks the executor: Dagster's own; the run config selects in_process, console INFO."""
    job = defs.resolve_job_def("rd_task_job")
    assert job.executor_def.name == "multi_or_in_process_executor"
    assert job.partitioned_config is not None
    run_config = job.partitioned_config.get_run_config_for_partition_key("2026-03-02_09-15-27-118204")
    assert run_config == {
        "execution": {"config": {"in_process": {}}},
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }
    assert "RD_ASSETS_EXECUTOR" not in (REPO / "rd_assets" / "definitions.py").read_text()


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
    storages = [deploy[section] for section in ("run_storage", "event_log_storage", "schedule_storage")]
    assert {s["module"] for s in storages} == {"rd_assets.instance.pooled_postgres_storage"}
    assert all(s["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2" for s in storages)


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
