"""deploy/dagster.yaml as an instance on a real PostgreSQL: its connection comes only from the environment.

The file holds no host, database, user or password: every connection value is an ``env:`` reference, so the
same file serves every machine and no secret sits in it. Loaded with those variables set, it is a PostgreSQL
instance with the queue, the per-task limit, run monitoring and run retries the deployment tests rely on; a
wrong password is refused with PostgreSQL's own reason.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, DefaultRunLauncher, QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from rd_assets.defs.instance_connections import hold_connections
from rd_assets_tests.deploy.postgres_server import PostgresServer
from rd_assets_tests.deploy.stack import DEPLOY

CONNECTION_KEYS = ("hostname", "port", "db_name", "username", "password")


def deploy_config() -> dict:
    return yaml.safe_load((DEPLOY / "dagster.yaml").read_text())


def test_the_connection_is_read_from_the_environment_only() -> None:
    db = deploy_config()["storage"]["postgres"]["postgres_db"]
    assert {key: sorted(db[key]) for key in CONNECTION_KEYS} == {key: ["env"] for key in CONNECTION_KEYS}
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    (server,) = [entry["grpc_server"] for entry in workspace["load_from"]]
    assert sorted(server["host"]) == sorted(server["port"]) == ["env"]


@pytest.fixture
def home(tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    for key, value in postgres.env(postgres.create_database(f"config_{tmp_path.name[-20:].lower()}")).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.mark.usefixtures("home")
def test_the_instance_is_postgres_with_queue_limits_monitoring_and_retries() -> None:
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert [(lim["key"], lim["limit"]) for lim in queue.tag_concurrency_limits] == [("dagster/partition", 1)]
        assert queue.tag_concurrency_limits[0]["value"] == {"applyLimitPerUniqueValue": True}
        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled and instance.run_retries_max_retries >= 1
        instance.add_dynamic_partitions("rd_task", ["written-through-postgres"])
    with DagsterInstance.get() as again:
        assert again.get_dynamic_partitions("rd_task") == ["written-through-postgres"]


def sessions_opened(postgres: PostgresServer, database: str) -> int:
    """Connections ever opened to ``database`` (PostgreSQL counts them in pg_stat_database.sessions)."""
    conn = postgres.connect("postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,))
            (count,) = cur.fetchone()
            return int(count)
    finally:
        conn.close()


@pytest.mark.usefixtures("home")
def test_a_run_worker_keeps_its_connections_instead_of_one_per_event(postgres: PostgresServer) -> None:
    """What ``hold_connections`` (called by every run of the code location) changes: without it, Dagster opens a
    connection per event written; with it, the instance writes its events over connections it keeps."""
    with DagsterInstance.get() as instance:
        database = instance.event_log_storage.postgres_url.rsplit("/", 1)[-1].split("?")[0]
        run = instance.add_run(DagsterRun(job_name="connections"))

        def connections_for(events: int) -> int:
            before = sessions_opened(postgres, database)
            for i in range(events):
                instance.report_engine_event(f"event {i}", run)
            time.sleep(1.0)  # a closed session's statistics reach pg_stat_database when its backend has exited
            return sessions_opened(postgres, database) - before - 1  # the counting query's own session

        assert connections_for(20) >= 15, "Dagster's default: about a connection per event written"
        hold_connections(instance)
        hold_connections(instance)  # once per instance: a second call changes nothing
        assert connections_for(20) <= 2
