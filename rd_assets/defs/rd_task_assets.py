"""The six assets of a task, materialized by one step that runs the core's one extraction.

:func:`rd_assets.core.bundle.extract.extraction_stages` resolves the task stage by stage; each stage becomes
the materialization of its asset (:mod:`rd_assets.defs.specs`) with the checks that belong to it, in the
graph's order. A typed error, or a failed blocking check, ends the step with a :class:`dagster.Failure` before
any later asset is materialized, so nothing is published; the checks of assets never reached are not reported.
The parts reach the bundle through :func:`rd_assets.core.bundle.extract.publish_parts`, exactly as in
``rd-assets extract``, so Dagster and the CLI publish the same bytes.

Why one step rather than one per asset: the values of a task are one reading of one snapshot. Ten steps (six
assets, four checks) meant three reads of the task (the chosen snapshot unpickled twice on a cold index), every
value written to disk and read back by an IO manager, and the access audit read back from the instance; one
step reads once and keeps the values in memory. An in-process run of one sample task went from 1.5-2.2x the CLI
``rd-assets extract`` to 0.9-1.1x (``bench/bench_dagster_run.py``); what is left is Dagster's own event log.
The lineage is unchanged: six assets, their dependencies, their checks, each materialization with its own
metadata and a data version: the fingerprint, the weight sha256 and the content hash where the value has one, else
the sha256 of its document (:func:`content_version`).

A backfill runs tasks in batches (``BackfillPolicy.multi_run``, :func:`rd_assets.defs.partitions.backfill_batch`
tasks per run): the step then walks its range of tasks with one snapshot index, each task exactly as above, its
results recorded on its own partition (:mod:`rd_assets.defs.partition_events`). A run costs a process start and
a code load whatever it holds, so a backfill of 200 tasks pays them 4 times instead of 200
(``bench/bench_deploy.py``). Every extraction holds the task's lock in the store from its read to its
publication (:func:`rd_assets.core.bundle.store.extraction_lock`), so a batch and a sensor run of the same
task, which Dagster's per-partition run limit cannot keep apart, never interleave.

The results carry metadata, checks and data versions but no ``value``: these specs declare no IO-managed
output (``MaterializeResult(value=...)`` would hand each value to an IO manager, which here would only store a
second copy of what the published bundle already holds).
"""

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import closing
from functools import cached_property
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    multi_asset,
    with_source_code_references,
)
from pydantic import BaseModel

from rd_assets.core.bundle import rules
from rd_assets.core.bundle.extract import (
    AnchorStage,
    BundleParts,
    CodeStage,
    OrderStage,
    SessionStage,
    Stage,
    WeightStage,
    checked_task_id,
    extraction_stages,
    publish_parts,
    record_task_failure,
    refuse_inside,
)
from rd_assets.core.bundle.store import extraction_lock
from rd_assets.core.bundle.task_status import clear_failure, is_task_failure
from rd_assets.core.contracts.models import ErrorInfo, SotaFactorExperiment
from rd_assets.core.errors import InvalidLogDirError, RdAssetsError, WeightsNotPersistedError
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.fingerprint import selection_fingerprint
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.defs import check_results
from rd_assets.defs.failures import batch_failure, batch_stopped, failure, no_retry
from rd_assets.defs.metadata import (
    StageAccess,
    anchor_metadata,
    bundle_metadata,
    code_metadata,
    order_metadata,
    session_metadata,
    weight_metadata,
)
from rd_assets.defs.overview import overview_metadata
from rd_assets.defs.partition_events import PartitionEvent, partition_events
from rd_assets.defs.partitions import backfill_batch
from rd_assets.defs.resources import BundleStore, RdLogRoot
from rd_assets.defs.specs import (
    AISTOCK_BUNDLE,
    ASSET_SPECS,
    CHAIN,
    CHECK_SPECS,
    FACTOR_CODE,
    FACTOR_ORDER,
    LAST_SOTA_FACTOR_EXP,
    MODEL_WEIGHT,
    SESSION_SNAPSHOT,
)

Event = MaterializeResult | AssetCheckResult


def content_version(document: BaseModel, files: Mapping[str, bytes] | None = None) -> DataVersion:
    """A data version that changes exactly when the value does: the sha256 of its JSON (and of its files' bytes).

    Every asset of the chain carries one, so a batch can record each task's versions and provenance as a run of
    that task alone does (:mod:`rd_assets.defs.partition_events`), and Dagster never has to derive one.
    """
    digest = hashlib.sha256(document.model_dump_json().encode())
    for relpath, data in sorted((files or {}).items()):
        digest.update(f"\0{relpath}\0{len(data)}\0".encode())
        digest.update(data)
    return DataVersion(digest.hexdigest())


class _TaskRun:
    """One step's walk through the stages: what the later stages need from the earlier ones."""

    def __init__(
        self,
        context: AssetExecutionContext,
        task_id: str,
        rd_log_root: RdLogRoot,
        bundle_store: BundleStore,
        index: SnapshotIndex,
    ) -> None:
        self.context = context
        self.task_id = task_id
        self.rd_log_root = rd_log_root
        self.bundle_store = bundle_store
        self.index = index
        self.access = AccessLog()
        self.touched = StageAccess(self.access)
        self.resolved = 0
        """How many assets of :data:`CHAIN` are materialized; the next one is what a typed error is reported on."""
        self.fingerprint = ""
        self.anchor: SotaFactorExperiment | None = None
        self.weight: WeightStage | None = None

    @property
    def pending(self) -> AssetKey:
        return CHAIN[min(self.resolved, len(CHAIN) - 1)]

    @cached_property
    def log_dir(self) -> Path:
        """The task's log dir; a partition key that is not a task id is refused before any path is built."""
        return self.rd_log_root.log_dir(self.task_id).resolve()

    def events(self) -> Iterator[Event]:
        try:
            refuse_inside(self.log_dir, "bundle store", self.bundle_store.path)
            if checked_task_id(self.log_dir) != self.task_id:  # an alias would lock and publish under another id
                raise InvalidLogDirError(f"{self.task_id} resolves to {self.log_dir.name}", path=str(self.log_dir))
            with extraction_lock(self.bundle_store.path, self.task_id):
                stages = extraction_stages(
                    self.log_dir,
                    path_map=self.rd_log_root.parsed_path_map(),
                    index=self.index,
                    signing_key=self.rd_log_root.signing_key(),
                    access=self.access,
                )
                with closing(stages):
                    for stage in stages:
                        yield from self._stage(stage)
                        self.resolved += 1
        except WeightsNotPersistedError as exc:
            assert self.anchor is not None  # the weight is resolved after the anchor
            error = ErrorInfo(code=exc.code, message=exc.message, path=exc.path)
            yield check_results.weight_source(None, self.anchor, error)
            self._record_failure(exc)
            raise failure(exc, asset=self.pending) from exc
        except RdAssetsError as exc:
            self._record_failure(exc)
            raise failure(exc, asset=self.pending) from exc

    def _record_failure(self, exc: RdAssetsError) -> None:
        """Keep the store's failure record in step (the API answers ``failed`` with this reason), as the CLI does."""
        try:
            record_task_failure(
                self.bundle_store.path, self.task_id, exc, log_dir=self.log_dir, fingerprint=self.fingerprint or None
            )
        except RdAssetsError as unrecorded:  # the step fails with the task's own error either way
            self.context.log.error(f"failure record not written: {unrecorded.code}: {unrecorded.message}")

    def _stage(self, stage: Stage) -> Iterator[Event]:
        match stage:
            case SessionStage():
                self.fingerprint = selection_fingerprint(stage.selection).token
                yield self._materialize(
                    SESSION_SNAPSHOT, session_metadata(stage, self.fingerprint), DataVersion(self.fingerprint)
                )
            case AnchorStage():
                self.anchor = stage.anchor
                yield self._materialize(LAST_SOTA_FACTOR_EXP, anchor_metadata(stage), content_version(stage.anchor))
            case WeightStage():
                yield from self._weight(stage)
            case OrderStage():
                yield from self._order(stage)
            case CodeStage():
                assert self.anchor is not None
                check = check_results.code_complete(stage.code, self.anchor)
                version = content_version(stage.code.index, stage.code.files)
                yield self._materialize(FACTOR_CODE, code_metadata(stage.code, self.anchor), version, checks=[check])
            case BundleParts():
                yield self._publish(stage)

    def _materialize(
        self,
        key: AssetKey,
        metadata: dict[str, MetadataValue],
        data_version: DataVersion | None = None,
        checks: list[AssetCheckResult] | None = None,
    ) -> MaterializeResult:
        return MaterializeResult(
            asset_key=key,
            metadata={**metadata, **self.touched.take()},
            data_version=data_version,
            check_results=checks or [],
        )

    def _weight(self, stage: WeightStage) -> Iterator[Event]:
        assert self.anchor is not None and stage.weight is not None  # a missing weight raised in the stage
        self.weight = stage
        check = check_results.weight_source(stage.weight, self.anchor)
        yield self._materialize(
            MODEL_WEIGHT, weight_metadata(stage), DataVersion(stage.weight.info.sha256), checks=[check]
        )
        if not check.passed:
            rules.require_weight_source(stage.weight, self.anchor)

    def _order(self, stage: OrderStage) -> Iterator[Event]:
        assert self.weight is not None
        traversal = check_results.no_traversal(self.access, self.log_dir, stage.order)
        matches = check_results.order_matches_model(stage.order)
        metadata, version = order_metadata(stage, self.weight), content_version(stage.order)
        yield self._materialize(FACTOR_ORDER, metadata, version, checks=[traversal, matches])
        if not traversal.passed:
            rules.require_no_traversal(self.access, self.log_dir, stage.order)
        if not matches.passed:
            rules.require_order_matches(stage.order)

    def _publish(self, parts: BundleParts) -> MaterializeResult:
        outcome = publish_parts(parts, store=self.bundle_store.path, keep_versions=self.bundle_store.keep_versions)
        manifest = outcome.content.manifest
        clear_failure(self.bundle_store.path, manifest.task_id)
        self.bundle_store.record_publication(
            task_id=manifest.task_id,
            fingerprint=self.fingerprint,
            content_hash=outcome.publish.content_hash,
            version_dir=outcome.publish.version_dir,
            run_id=self.context.run.run_id,
        )
        checks = [
            check_results.bundle_integrity(self.bundle_store.path, manifest.task_id, manifest),
            check_results.selection_ready(manifest),
        ]
        return self._materialize(
            AISTOCK_BUNDLE,
            {**bundle_metadata(outcome, self.fingerprint), **overview_metadata(parts)},
            DataVersion(outcome.publish.content_hash),
            checks=checks,
        )


@multi_asset(
    name="extract_rd_task",
    specs=ASSET_SPECS,
    check_specs=CHECK_SPECS,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=backfill_batch()),
    description="Reads each RD-Agent task once and materializes its six assets in order, with their checks.",
)
def extract_rd_task(
    context: AssetExecutionContext, rd_log_root: RdLogRoot, bundle_store: BundleStore
) -> Iterator[Event | PartitionEvent | Output]:
    with rd_log_root.open_index() as index:
        if context.has_partition_key:
            try:
                yield from _TaskRun(context, context.partition_key, rd_log_root, bundle_store, index).events()
            except Failure as exc:
                if _is_the_sessions(exc):
                    no_retry(context)
                raise
        else:
            yield from _batch(context, rd_log_root, bundle_store, index)


def _is_the_sessions(failed: Failure) -> bool:
    """Whether a task's failure came from its own session (the same input fails again), not from the store."""
    return isinstance(failed.__cause__, RdAssetsError) and is_task_failure(failed.__cause__)


def _batch(
    context: AssetExecutionContext, rd_log_root: RdLogRoot, bundle_store: BundleStore, index: SnapshotIndex
) -> Iterator[PartitionEvent | Output]:
    """A backfill's range of tasks, one after another: a task that fails for its own session does not stop the others.

    Such a failure is recorded and logged as it happens; the step ends failed afterwards, naming every failed task,
    so the backfill shows exactly those partitions as failed, and the run is not retried (it would fail the same
    way). Anything else (the store, the database, an unexpected error) stops the batch at once, naming where it
    stopped: it is not the task's fault, and the run's retry repeats the batch.
    """
    keys = context.partition_keys
    failed: dict[str, Failure] = {}
    published = 0
    for task_id in keys:
        try:
            for result in _TaskRun(context, task_id, rd_log_root, bundle_store, index).events():
                yield from partition_events(context.instance, task_id, result)
        except Failure as exc:
            if not _is_the_sessions(exc):
                raise batch_stopped(task_id, exc, published=published, failed=failed, tasks=len(keys)) from exc
            failed[task_id] = exc
            context.log.error(f"{task_id}: {exc.description}")
        except Exception as exc:
            raise batch_stopped(task_id, exc, published=published, failed=failed, tasks=len(keys)) from exc
        else:
            published += 1
    if failed:
        no_retry(context)
        raise batch_failure(failed, tasks=len(keys))
    for spec in CHECK_SPECS:  # each check's output is required of the step; every task's evaluation is above
        yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(spec.key))


rd_task_assets = with_source_code_references([extract_rd_task])
