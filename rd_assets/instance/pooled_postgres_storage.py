"""PostgreSQL storages for the Dagster instance that keep their connections in every process.

Why: dagster-postgres opens a new connection for each read and write (SQLAlchemy ``NullPool``) in every process
but the webserver, so that a process creating many instances holds nothing. A backfill writes in bursts: the
daemon writes a batch's planned events one at a time (six per task), a run worker about twelve events per task,
and each event opened about three connections. On a password-protected server a connection costs a backend
process and a SCRAM exchange, about 5 ms on 2 cores, so connecting was the larger part of a backfill's time
(``bench/bench_deploy.py``). These are dagster-postgres's own storages with the webserver's pooling
(``optimize_for_webserver``) switched on as they load; ``inst_data`` names these classes, so every process that
rebuilds the instance from its ref, run workers included, gets the pool too.

What keeps a kept connection as safe as a new one: each checkout first pings it, and a broken one (a database
restart, a failover, a dropped idle TCP connection) is replaced by a new connection, with dagster-postgres's own
retries; an instance closes its connections when it is disposed (the code server builds one per sensor tick) or
collected. Each process keeps one connection per storage in use (three at most) and opens more only while it runs
queries at once. The event-log storage also writes a run's status before the run's event, so that Dagster's retry
consumer never sees a failure event of a run not yet failed (``PooledPostgresEventLogStorage.store_event``).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

import psycopg2
from dagster import Field, IntSource
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import pg_url_from_config
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

if TYPE_CHECKING:
    from dagster import EventLogEntry
    from dagster._serdes import ConfigurableClassData
    from sqlalchemy.engine import Engine


class PoolSettings(BaseModel):
    """The optional ``pool`` section of each storage's config in ``dagster.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    statement_timeout_ms: int = 0
    """0: no limit, as dagster-postgres has outside the webserver (whose own default is 15 s)"""
    pool_recycle_seconds: int = 3600
    """replace a kept connection this old; -1: never"""
    max_overflow: int = 20
    """connections beyond the kept one while queries run at once; -1: no limit"""

    @field_validator("statement_timeout_ms")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (no limit) or more")
        return value

    @field_validator("pool_recycle_seconds")
    @classmethod
    def _positive_or_never(cls, value: int) -> int:
        if value == 0 or value < -1:  # 0 would replace the connection at every checkout
            raise ValueError("must be -1 (never) or more than 0")
        return value

    @field_validator("max_overflow")
    @classmethod
    def _overflow(cls, value: int) -> int:
        if value < -1:
            raise ValueError("must be -1 (no limit) or 0 or more")
        return value


def _ping(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """SQLAlchemy's ``checkout`` hook: a connection that cannot answer is discarded, and the pool connects anew."""
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        raise DisconnectionError(f"a kept connection was broken: {exc}".strip()) from exc


class _Pooled:
    """The ``postgres`` storage config plus an optional ``pool`` section; built by ``cls``, then pooled."""

    _engine: Engine  # dagster-postgres's, replaced by optimize_for_webserver

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        pool = {name: Field(IntSource, default_value=f.default) for name, f in PoolSettings.model_fields.items()}
        return {**super().config_type(), "pool": Field(pool, is_required=False)}  # type: ignore[misc]

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]) -> Self:
        try:
            pool = PoolSettings.model_validate(config_value.get("pool", {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"pool.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})" for e in exc.errors()
            )
            raise ValueError(f"{cls.__name__}: invalid `pool` in dagster.yaml: {problems}") from None
        arguments: dict[str, Any] = {
            "inst_data": inst_data,
            "postgres_url": pg_url_from_config(config_value),
            "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        }
        if config_value.get("auth_provider"):  # dagster-postgres versions with token auth only
            from dagster_postgres.utils import get_token_provider_from_config

            arguments["token_provider"] = get_token_provider_from_config(config_value)
        storage = cls(**arguments)
        storage.optimize_for_webserver(  # type: ignore[attr-defined]
            statement_timeout=pool.statement_timeout_ms,
            pool_recycle=pool.pool_recycle_seconds,
            max_overflow=pool.max_overflow,
        )
        event.listen(storage._engine, "checkout", _ping)
        weakref.finalize(storage, storage._engine.dispose)
        return storage

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    """``run_storage`` of deploy/dagster.yaml."""


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    """``schedule_storage`` of deploy/dagster.yaml."""


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    """``event_log_storage`` of deploy/dagster.yaml. It also remembers which tables exist: dagster-postgres asks
    the database, on a second connection opened while the first is held, before storing each asset event's tags;
    with a pool of one connection that meant a new connection per materialization. A table, once there, stays
    (Dagster's own migrations only add tables)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tables_present: set[str] = set()
        super().__init__(*args, **kwargs)

    def store_event(self, event: EventLogEntry) -> None:
        """A run's status first, then the event that reports it.

        Why: Dagster stores a run event, then updates the run's status, then tags whether it will be retried.
        The daemon's run-retry consumer reads new failure events and then their runs; one that reads in between
        sees the run not yet failed, moves its cursor past the event, and the retry is lost for good. The daemon's
        own failures (run monitoring: a dead host, a run over its time) are written by the same process as the
        consumer reads, on the same 5 s rhythm, and with kept connections both land within milliseconds of each
        other: the host-death test lost its retry in 2 of 10 runs (none of 6 after). Updating the status first closes
        that window; Dagster's own update and retry tag that follow write the same values again.
        """
        dagster_event = event.dagster_event
        if dagster_event is not None and dagster_event.is_job_event and self.has_instance:
            updated = datetime.fromtimestamp(event.timestamp, tz=UTC)
            self._instance.run_storage.handle_run_event(event.run_id, dagster_event, updated)
        super().store_event(event)

    def has_table(self, table_name: str) -> bool:
        if table_name not in self._tables_present and super().has_table(table_name):
            self._tables_present.add(table_name)
        return table_name in self._tables_present
