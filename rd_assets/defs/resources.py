"""Dagster resources: where task logs are read from and where bundles (and asset values) are written.

Configured from environment variables; every default points at the bundled samples and at git-ignored
folders of this checkout, so ``dagster dev`` on a fresh clone works with no configuration at all.

=========================  =====================================================================
``RD_ASSETS_LOG_ROOT``     folder holding the task log dirs (default ``<repo>/../shared/samples/log``)
``RD_ASSETS_PATH_MAP``     ``;``-separated ``FROM=TO`` prefix rewrites for pickled workspace paths
``RD_ASSETS_STORE``        bundle store (default ``<repo>/.rd_assets_store``)
``RD_ASSETS_INDEX``        snapshot summary index (default ``<repo>/.rd_assets_index/snapshot-index.sqlite3``)
``RD_ASSETS_KEEP_VERSIONS`` published versions kept per task (default 3)
``RD_ASSETS_SIGNING_KEY``  rdagent 1.0 ``ARTIFACT_SIGNING_KEY``; read at run time, never stored in config
=========================  =====================================================================
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.contracts.models import Document
from rd_assets.core.errors import InvalidLogDirError
from rd_assets.core.samples import REPO_DIR, SAMPLE_PATH_MAP, SAMPLES_DIR
from rd_assets.core.session.index import ENV_INDEX_PATH, SnapshotIndex
from rd_assets.core.session.task_reader import ENV_SIGNING_KEY
from rd_assets.core.task_ids import is_task_id

ENV_LOG_ROOT = "RD_ASSETS_LOG_ROOT"
ENV_PATH_MAP = "RD_ASSETS_PATH_MAP"
ENV_STORE = "RD_ASSETS_STORE"
ENV_KEEP_VERSIONS = "RD_ASSETS_KEEP_VERSIONS"

DEFAULT_LOG_ROOT = SAMPLES_DIR / "log"
DEFAULT_PATH_MAP = (SAMPLE_PATH_MAP,)
DEFAULT_STORE = REPO_DIR / ".rd_assets_store"
DEFAULT_INDEX = REPO_DIR / ".rd_assets_index" / "snapshot-index.sqlite3"

IO_DIR = ".dagster_io"
STATE_DIR = ".dagster_state"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{secrets.token_hex(6)}")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def task_path(base: Path, task_id: str) -> Path:
    """``base/<task_id>``, refusing anything that is not a task id (so nothing can traverse)."""
    if not is_task_id(task_id):
        raise InvalidLogDirError(f"not a task id (YYYY-MM-DD_HH-MM-SS-ffffff): {task_id!r}", path=task_id)
    return base / task_id


class RdLogRoot(ConfigurableResource):
    """The RD-Agent log root (read-only: nothing is ever written below it) and how to read its pickles."""

    log_root: str = Field(description="folder holding <task_id>/__session__/... dirs")
    path_map: list[str] = Field(default_factory=list, description="FROM=TO rewrites of pickled workspace paths")
    signing_key_env: str = Field(ENV_SIGNING_KEY, description="name of the env var holding the signing key")
    index_path: str | None = Field(None, description="snapshot summary index (SQLite); null disables the cache")

    @classmethod
    def from_env(cls) -> RdLogRoot:
        raw_map = os.environ.get(ENV_PATH_MAP)
        rules = [r.strip() for r in raw_map.split(";") if r.strip()] if raw_map is not None else list(DEFAULT_PATH_MAP)
        return cls(
            log_root=os.environ.get(ENV_LOG_ROOT) or str(DEFAULT_LOG_ROOT),
            path_map=rules,
            index_path=os.environ.get(ENV_INDEX_PATH) or str(DEFAULT_INDEX),
        )

    @property
    def root(self) -> Path:
        return Path(self.log_root)

    def log_dir(self, task_id: str) -> Path:
        return task_path(self.root, task_id)

    def signing_key(self) -> str | None:
        return os.environ.get(self.signing_key_env) or None

    def parsed_path_map(self) -> PathMap:
        return PathMap.parse(self.path_map)

    @contextmanager
    def open_index(self) -> Iterator[SnapshotIndex]:
        index = SnapshotIndex(Path(self.index_path) if self.index_path else None)
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
    """The bundle store: published bundles, plus the Dagster layer's own state in dot-folders beside them."""

    store_dir: str = Field(description="bundles are published as <store>/<task_id>")
    keep_versions: int = Field(3, ge=1, description="published versions kept per task")

    @classmethod
    def from_env(cls) -> BundleStore:
        keep = os.environ.get(ENV_KEEP_VERSIONS)
        return cls(store_dir=os.environ.get(ENV_STORE) or str(DEFAULT_STORE), keep_versions=int(keep) if keep else 3)

    @property
    def path(self) -> Path:
        return Path(self.store_dir)

    @property
    def io_dir(self) -> Path:
        """Asset values per asset and partition (see :mod:`rd_assets.defs.io_managers`)."""
        return self.path / IO_DIR

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
        write_atomic(self.record_path(task_id), (record.model_dump_json(indent=2) + "\n").encode())
        return record

    def publication(self, task_id: str) -> PublicationRecord | None:
        """The recorded publication of ``task_id``, or None when it was never published from Dagster."""
        try:
            raw = self.record_path(task_id).read_bytes()
        except FileNotFoundError:
            return None
        return PublicationRecord.model_validate_json(raw)
