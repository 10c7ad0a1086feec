"""PostgreSQL storages for the Dagster instance that keep their connections in every process.

Why: dagster-postgres opens a new connection for each read and write (SQLAlchemy ``NullPool``) in every process
but the webserver, so that a process creating many instances holds nothing. Here each process holds one instance
and writes in bursts: the daemon writes a backfill batch's planned events one at a time (six per task), a run
worker about twelve events per task, and each event opened about three connections. On a password-protected
server a connection costs a backend process and a SCRAM exchange, about 5 ms on 2 cores, so connecting was the
larger part of a backfill's time (``bench/bench_deploy.py``). These are dagster-postgres's own storages with the
webserver's pooling (``optimize_for_webserver``) switched on as they load; ``inst_data`` names these classes, so
every process that rebuilds the instance from its ref, run workers included, gets the pool too.

What it costs: a process keeps one connection per storage (three) and opens more only while it runs queries at
once; a kept connection that a database restart broke fails the one operation that finds it, after which
SQLAlchemy drops the pool and reconnects (``rd_assets_tests/deploy/test_postgres_outage.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from dagster import Field, IntSource
from dagster._serdes import ConfigurableClassData
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import pg_url_from_config

POOL_CONFIG = {
    # 0: no limit, as dagster-postgres has outside the webserver (whose own default is 15 s)
    "statement_timeout_ms": 0,
    "pool_recycle_seconds": 3600,
    "max_overflow": 20,
}


class _Pooled:
    """The ``postgres`` storage config plus an optional ``pool`` section; built by ``cls``, then pooled."""

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        pool = {key: Field(IntSource, default_value=value) for key, value in POOL_CONFIG.items()}
        return {**super().config_type(), "pool": Field(pool, is_required=False)}  # type: ignore[misc]

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]) -> Self:
        arguments: dict[str, Any] = {
            "inst_data": inst_data,
            "postgres_url": pg_url_from_config(config_value),
            "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        }
        if config_value.get("auth_provider"):  # dagster-postgres versions with token auth only
            from dagster_postgres.utils import get_token_provider_from_config

            arguments["token_provider"] = get_token_provider_from_config(config_value)
        storage = cls(**arguments)
        pool = {**POOL_CONFIG, **config_value.get("pool", {})}
        storage.optimize_for_webserver(  # type: ignore[attr-defined]
            statement_timeout=pool["statement_timeout_ms"],
            pool_recycle=pool["pool_recycle_seconds"],
            max_overflow=pool["max_overflow"],
        )
        return storage


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    """``run_storage`` of deploy/dagster.yaml."""


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    """``schedule_storage`` of deploy/dagster.yaml."""


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    """``event_log_storage`` of deploy/dagster.yaml. It also remembers which tables exist: dagster-postgres asks
    the database, on a second connection opened while the first is held, before storing each asset event's tags;
    with a pool of one connection that meant a new connection per materialization. A table, once there, stays."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tables_present: set[str] = set()
        super().__init__(*args, **kwargs)

    def has_table(self, table_name: str) -> bool:
        if table_name not in self._tables_present and super().has_table(table_name):
            self._tables_present.add(table_name)
        return table_name in self._tables_present
