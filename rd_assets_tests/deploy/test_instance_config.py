"""deploy/dagster.yaml as an instance on a real PostgreSQL: its connection comes only from the environment.

The file holds no host, database, user or password: every connection value is an ``env:`` reference, so the
same file serves every machine and no secret sits in it. Loaded with those variables set, it is a PostgreSQL
instance with the queue, the per-task limit, run monitoring and run retries the deployment tests rely on; a
wrong password is refused with PostgreSQL's own reason.
"""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultRunLauncher,
    QueuedRunCoordinator,
)
from dagster_postgres import PostgresEventLogStorage
from sqlalchemy import text

from rd_assets.instance.pooled_postgres_storage import (
    PooledPostgresEventLogStorage,
    PooledPostgresRunStorage,
    PooledPostgresScheduleStorage,
)
from rd_assets_tests.deploy.postgres_server import PostgresServer
from rd_assets_tests.deploy.stack import DEPLOY

CONNECTION_KEYS = ("hostname", "port", "db_name", "username", "password")
STORAGES = ("run_storage", "event_log_storage", "schedule_storage")


def deploy_config() -> dict:
    return yaml.safe_load((DEPLOY / "dagster.yaml").read_text())


def test_the_connection_is_read_from_the_environment_only() -> None:
    config = deploy_config()
    run, events, schedules = (config[section]["config"] for section in STORAGES)
    assert run == events == schedules, "the three storages share one connection config"
    db = run["postgres_db"]
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
        assert isinstance(instance.run_storage, PooledPostgresRunStorage)
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PooledPostgresScheduleStorage)
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


def admin(postgres: PostgresServer, sql: str, database: str) -> int:
    """Run ``sql`` (one integer result, ``%s`` = ``database``) on a connection of its own to the server."""
    conn = postgres.connect("postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, (database,))
            (value,) = cur.fetchone()
            return int(value)
    finally:
        conn.close()


def sessions_opened(postgres: PostgresServer, database: str) -> int:
    """Connections ever opened to ``database`` (PostgreSQL counts them in pg_stat_database.sessions)."""
    return admin(postgres, "SELECT sessions FROM pg_stat_database WHERE datname = %s", database)


def connected(postgres: PostgresServer, database: str) -> int:
    """Connections to ``database`` open now."""
    return admin(postgres, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", database)


def database_of(instance: DagsterInstance) -> str:
    return instance.event_log_storage.postgres_url.rsplit("/", 1)[-1].split("?")[0]


def with_storage(home: Path, storage: dict) -> None:
    """Rewrite ``home``'s dagster.yaml with other storage sections, the rest unchanged."""
    config = deploy_config()
    for section in STORAGES:
        del config[section]
    (home / "dagster.yaml").write_text(yaml.safe_dump({**config, **storage}))


def connections_for(postgres: PostgresServer, instance: DagsterInstance, events: int) -> int:
    """Connections opened while ``instance`` writes ``events`` events of a run, then as many materializations
    with tags (what each asset of a run writes)."""
    database = database_of(instance)
    run = instance.add_run(DagsterRun(job_name="connections"))
    before = sessions_opened(postgres, database)
    for i in range(events):
        instance.report_engine_event(f"event {i}", run)
        instance.report_runless_asset_event(AssetMaterialization("probe", tags={"dagster/data_version": str(i)}))
    time.sleep(1.0)  # a closed session's statistics reach pg_stat_database when its backend has exited
    return sessions_opened(postgres, database) - before - 1  # the counting query's own session


def test_every_process_keeps_its_connections_instead_of_one_per_event(home: Path, postgres: PostgresServer) -> None:
    """What the pooled storages change. With dagster-postgres's own ``storage: postgres`` (same database), an
    instance opens a connection or more per event written; with deploy/dagster.yaml it writes over kept ones, and
    so does the instance a run worker rebuilds from the ref it is launched with."""
    with DagsterInstance.get() as instance:
        assert connections_for(postgres, instance, 20) <= 2
        with DagsterInstance.from_ref(instance.get_ref()) as run_workers:
            assert isinstance(run_workers.event_log_storage, PooledPostgresEventLogStorage)
            assert connections_for(postgres, run_workers, 20) <= 2
    with_storage(home, {"storage": {"postgres": deploy_config()["run_storage"]["config"]}})
    with DagsterInstance.get() as plain:
        assert type(plain.event_log_storage) is PostgresEventLogStorage
        assert connections_for(postgres, plain, 20) >= 40, "Dagster's default: a connection or more per event"


def statement_timeout(instance: DagsterInstance) -> str:
    with instance.event_log_storage.index_connection() as conn:
        return conn.execute(text("SHOW statement_timeout")).scalar_one()


def test_the_pool_is_configurable_and_has_no_statement_timeout_by_default(home: Path) -> None:
    with DagsterInstance.get() as instance:
        assert statement_timeout(instance) == "0"
    storages = {section: deploy_config()[section] for section in STORAGES}
    for storage in storages.values():
        storage["config"]["pool"] = {"statement_timeout_ms": 2500}
    with_storage(home, storages)
    with DagsterInstance.get() as instance:
        assert statement_timeout(instance) == "2500ms"


@pytest.mark.usefixtures("home")
def test_an_instance_closes_its_connections_when_disposed(postgres: PostgresServer) -> None:
    """The code server builds an instance from its ref for every sensor tick and disposes of it after: kept
    connections must not outlive it, or every tick would leave some open. The schedule storage, which Dagster
    does not dispose of, closes its connection when the instance is collected."""
    with DagsterInstance.get() as instance:
        database, ref = database_of(instance), instance.get_ref()
    before = connected(postgres, database)
    with DagsterInstance.from_ref(ref) as tick:
        run = tick.add_run(DagsterRun(job_name="tick"))
        tick.report_engine_event("a tick", run)
        tick.all_instigator_state()
        assert connected(postgres, database) >= before + 3, "kept while the instance lives"
    del tick
    gc.collect()
    deadline = time.monotonic() + 10
    while connected(postgres, database) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert connected(postgres, database) == before


@pytest.mark.usefixtures("home")
def test_a_kept_connection_that_broke_is_replaced_before_use(postgres: PostgresServer) -> None:
    """A database restart, a failover or a dropped idle connection breaks a kept connection; the next operation
    must still succeed, on a new connection, instead of failing on the broken one."""
    with DagsterInstance.get() as instance:
        run = instance.add_run(DagsterRun(job_name="broken"))
        instance.report_engine_event("before", run)
        terminated = admin(
            postgres,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            database_of(instance),
        )
        assert terminated >= 1
        instance.report_engine_event("after", run)
        assert [e.message for e in instance.all_logs(run.run_id)][-2:] == ["before", "after"]


@pytest.mark.parametrize(
    ("pool", "named"),
    [
        ({"max_overflow": -7}, "max_overflow"),
        ({"statement_timeout_ms": -5}, "statement_timeout_ms"),
        ({"pool_recycle_seconds": 0}, "pool_recycle_seconds"),
    ],
)
def test_a_pool_setting_that_would_break_every_connection_is_refused(home: Path, pool: dict, named: str) -> None:
    storages = {section: deploy_config()[section] for section in STORAGES}
    for storage in storages.values():
        storage["config"]["pool"] = pool
    with_storage(home, storages)
    with pytest.raises(ValueError, match=rf"invalid `pool` in dagster.yaml:.*{named}"):
        DagsterInstance.get()


def status_when_each_run_event_was_stored(postgres: PostgresServer, instance: DagsterInstance) -> list[tuple]:
    """Fail a run, with a trigger in PostgreSQL recording the run's status at the moment each run event's row is
    inserted: what the daemon's retry consumer, reading events then runs, can see at that moment."""
    conn = postgres.connect(database_of(instance))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(STATUS_AT_INSERT)
        run = instance.add_run(DagsterRun(job_name="ordering"))
        instance.report_run_failed(run, "failed on purpose")
        with conn.cursor() as cur:
            cur.execute("SELECT event_type, run_status FROM status_at_insert ORDER BY id")
            return cur.fetchall()
    finally:
        conn.close()


STATUS_AT_INSERT = """
CREATE TABLE IF NOT EXISTS status_at_insert (id serial, event_type text, run_status text);
TRUNCATE status_at_insert;
CREATE OR REPLACE FUNCTION record_status() RETURNS trigger AS $$ BEGIN
  INSERT INTO status_at_insert (event_type, run_status)
    SELECT NEW.dagster_event_type, status FROM runs WHERE run_id = NEW.run_id;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER record_status BEFORE INSERT ON event_logs FOR EACH ROW
  WHEN (NEW.dagster_event_type LIKE 'PIPELINE_%') EXECUTE FUNCTION record_status();
"""


def test_a_run_is_failed_before_its_failure_event_is_visible(home: Path, postgres: PostgresServer) -> None:
    """Dagster's own order (``storage: postgres``) stores the failure event while the run is still unfinished,
    the window in which the retry consumer skips it; these storages update the run first. Dagster's retry tag
    still comes with the failure."""
    with DagsterInstance.get() as instance:
        assert status_when_each_run_event_was_stored(postgres, instance) == [("PIPELINE_FAILURE", "FAILURE")]
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.FAILURE and run.tags.get("dagster/will_retry") == "true"
    with_storage(home, {"storage": {"postgres": deploy_config()["run_storage"]["config"]}})
    with DagsterInstance.get() as plain:
        assert status_when_each_run_event_was_stored(postgres, plain) == [("PIPELINE_FAILURE", "NOT_STARTED")]
