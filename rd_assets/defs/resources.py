"""Dagster resources: where task logs are read from and where bundles are written.

Their settings are bound to environment variables with :class:`dagster.EnvVar` in
:mod:`rd_assets.definitions`, resolved when a run, sensor or schedule starts (never at import). ``dg dev`` and
``dagster dev`` load ``.env`` from the project root; ``.env.example`` holds the values for the bundled samples.

============================  ========================================================================
``RD_ASSETS_LOG_ROOT``        folder holding the task log dirs (read only)
``RD_ASSETS_PATH_MAP``        ``;``-separated ``FROM=TO`` prefix rewrites for pickled workspace paths (may be empty)
``RD_ASSETS_STORE``           bundle store
``RD_ASSETS_INDEX``           snapshot summary index (SQLite); empty disables the cache
``RD_ASSETS_KEEP_VERSIONS``   published versions kept per task
``RD_ASSETS_SIGNING_KEY``     rdagent 1.0 ``ARTIFACT_SIGNING_KEY``; read at run time, never stored in config
============================  ========================================================================

Relative paths are resolved against the working directory of the Dagster process (the project root under
``dg dev``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.contracts.models import Document
from rd_assets.core.durable_files import write_atomic
from rd_assets.core.errors import BundleStoreError, InvalidLogDirError
from rd_assets.core.session.index import ENV_INDEX_PATH, SnapshotIndex
from rd_assets.core.session.task_reader import ENV_SIGNING_KEY
from rd_assets.core.task_ids import is_task_id

ENV_LOG_ROOT = "RD_ASSETS_LOG_ROOT"
ENV_PATH_MAP = "RD_ASSETS_PATH_MAP"
ENV_STORE = "RD_ASSETS_STORE"
ENV_INDEX = ENV_INDEX_PATH
ENV_KEEP_VERSIONS = "RD_ASSETS_KEEP_VERSIONS"

STATE_DIR = ".dagster_state"


def task_path(base: Path, task_id: str) -> Path:
    """``base/<task_id>``, refusing anything that is not a task id (so nothing can traverse)."""
    if not is_task_id(task_id):
        raise InvalidLogDirError(f"not a safe task id: {task_id!r}", path=task_id)
    return base / task_id


class RdLogRoot(ConfigurableResource):
    """The RD-Agent log root (read-only: nothing is ever written below it) and how to read its pickles."""

    log_root: str = Field(description="folder holding <task_id>/__session__/... dirs")
    path_map: str = Field("", description="';'-separated FROM=TO rewrites of pickled workspace paths")
    signing_key_env: str = Field(ENV_SIGNING_KEY, description="name of the env var holding the signing key")
    index_path: str | None = Field(None, description="snapshot summary index (SQLite); null or empty: no cache")

    @property
    def root(self) -> Path:
        return Path(self.log_root)

    def log_dir(self, task_id: str) -> Path:
        return task_path(self.root, task_id)

    def signing_key(self) -> str | None:
        return os.environ.get(self.signing_key_env) or None

    def path_map_rules(self) -> list[str]:
        return [rule.strip() for rule in self.path_map.split(";") if rule.strip()]

    def parsed_path_map(self) -> PathMap:
        return PathMap.parse(self.path_map_rules())

    @property
    def index_file(self) -> Path | None:
        return Path(self.index_path) if self.index_path else None

    @contextmanager
    def open_index(self) -> Iterator[SnapshotIndex]:
        index = SnapshotIndex(self.index_file)
        try:
            yield index
        finally:
            index.close()


class PublicationRecord(Document):
    """Which session state the current bundle of a task was built from (the schedule's staleness test)."""

    task_id: str
    session_fingerprint: str = Field(description="snapshot count-total size-newest mtime_ns of the read session")
    content_hash: str
    version_dir: str
    run_id: str
    recorded_at_utc: str


class BundleStore(ConfigurableResource):
    """The bundle store: published bundles, plus the Dagster layer's publication records in ``.dagster_state``."""

    store_dir: str = Field(description="bundles are published as <store>/<task_id>")
    keep_versions: int = Field(3, description="published versions kept per task (at least 1, the current one)")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Refuse a bad setting when the resource starts, before any task is read (an ``EnvVar`` is only
        resolved then, so pydantic bounds cannot check it)."""
        if self.keep_versions < 1:
            raise BundleStoreError(
                f"keep_versions is {self.keep_versions}: at least 1 (the current version) is kept "
                f"(${ENV_KEEP_VERSIONS})",
                path=self.store_dir,
            )

    @property
    def path(self) -> Path:
        return Path(self.store_dir)

    def record_path(self, task_id: str) -> Path:
        return task_path(self.path / STATE_DIR, task_id).with_suffix(".json")

    def record_publication(
        self, *, task_id: str, fingerprint: str, content_hash: str, version_dir: Path, run_id: str
    ) -> PublicationRecord:
        record = PublicationRecord(
            task_id=task_id,
            session_fingerprint=fingerprint,
            content_hash=content_hash,
            version_dir=str(version_dir),
            run_id=run_id,
            recorded_at_utc=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )
        self.record_path(task_id).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.record_path(task_id), (record.model_dump_json(indent=2) + "\n").encode())
        return record

    def publication(self, task_id: str) -> PublicationRecord | None:
        """The recorded publication of ``task_id``, or None when it was never published from Dagster."""
        try:
            raw = self.record_path(task_id).read_bytes()
        except FileNotFoundError:
            return None
        return PublicationRecord.model_validate_json(raw)
