"""Keep the run worker's database connections open for the life of its run.

Why: Dagster's PostgreSQL storages open a new connection for every read and write (SQLAlchemy ``NullPool``, so
that long-lived processes hold nothing); only the webserver switches to pooled connections, through
``DagsterInstance.optimize_for_webserver``. A run of this code location writes about 12 events per task and a
backfill batch holds 50 tasks, and each event write opens about three connections. On a password-protected
server each connection costs a backend process and a SCRAM exchange, about 5 ms on 2 cores, so a batch spent
most of its time connecting (``bench/bench_deploy.py``: 0.60 s per task in-process, 0.23 s with connections
kept). A run worker is a process of its own that ends with its run, so holding a connection per storage there
accumulates nothing. The settings are the webserver's defaults, its 15 s statement timeout included. The price:
a kept connection that a database restart broke fails the next operation that uses it, where a fresh connection
would have succeeded once the database was back; the run then fails and its retry starts a new process
(``rd_assets_tests/deploy/test_postgres_outage.py``). SQLite instances (``make dev``) are unaffected.
"""

from __future__ import annotations

import weakref

from dagster import DagsterInstance

STATEMENT_TIMEOUT_MS = 15_000
POOL_RECYCLE_S = 3600
MAX_OVERFLOW = 20
"""The defaults of ``dagster-webserver --db-statement-timeout / --db-pool-recycle / --db-pool-max-overflow``."""

_held: weakref.WeakSet[DagsterInstance] = weakref.WeakSet()


def hold_connections(instance: DagsterInstance) -> None:
    """Switch ``instance``'s storages to pooled connections, once per instance."""
    if instance in _held:
        return
    instance.optimize_for_webserver(
        statement_timeout=STATEMENT_TIMEOUT_MS, pool_recycle=POOL_RECYCLE_S, max_overflow=MAX_OVERFLOW
    )
    _held.add(instance)
