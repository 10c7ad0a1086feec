"""``rd_task_backfill_schedule``: once a day, rebuild bundles that are missing or stale.

A bundle is stale when the session fingerprint recorded at its publication (``<store>/.dagster_state``)
differs from the log dir's fingerprint now, or when the store's current version is not the recorded one.

A task whose last extraction failed for a reason of its own session (the store's failure record,
:mod:`rd_assets.core.bundle.task_status`, written only for such errors) is not requested again while its
fingerprint is the one recorded: the core is deterministic, so the same session would fail the same way, and a
new snapshot changes the fingerprint and lifts this. A run that failed for any other reason (a database outage,
a killed worker, a full disk) leaves no such record, so the task is requested again. A run already queued or
running for that fingerprint is not duplicated either, nor a task that a backfill batch in flight covers (a batch
carries a partition range, not a per-task tag, and runs as Dagster's asset job, not as ``rd_task_job``).
"""

from dataclasses import dataclass
from pathlib import Path

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from pydantic import ValidationError

from rd_assets.core.bundle.store import current_version_dir
from rd_assets.core.bundle.task_status import read_failure
from rd_assets.core.errors import RdAssetsError, TaskStatusError
from rd_assets.core.session.fingerprint import session_fingerprint
from rd_assets.core.text_safety import printable
from rd_assets.defs.jobs import rd_task_job
from rd_assets.defs.partitions import (
    FINGERPRINT_TAG,
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    RD_TASK_PARTITIONS_NAME,
)
from rd_assets.defs.resources import BundleStore, RdLogRoot
from rd_assets.defs.sensors import run_key
from rd_assets.defs.specs import CHAIN

RD_TASK_ASSETS = frozenset(CHAIN)

IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class Decision:
    task_id: str
    verdict: str
    """fresh, missing, stale, failed_before, in_flight, log_dir_gone, no_snapshots"""
    reason: str
    fingerprint: str | None = None

    @property
    def wants_run(self) -> bool:
        return self.verdict in ("missing", "stale")


@dataclass(frozen=True)
class InFlight:
    """What the queued and running runs of these assets cover (``is_rd_task_run``), read once per tick."""

    runs: frozenset[tuple[str, str | None]] = frozenset()
    """(task, session fingerprint) of each single-task run; None for a run without our fingerprint tag (launched
    from the UI), which covers the task whatever its session"""
    batches: frozenset[str] = frozenset()
    """tasks inside the partition range of a backfill batch"""


def is_rd_task_run(run: DagsterRun) -> bool:
    """A run of ``rd_task_job`` (sensor, schedule) or of Dagster's asset job over these assets: a backfill batch
    or a run launched from the UI is named ``__ASSET_JOB``, not after our job."""
    return run.job_name == rd_task_job.name or bool(run.asset_selection and run.asset_selection & RD_TASK_ASSETS)


def in_flight(instance: DagsterInstance, partitions: list[str]) -> InFlight:
    order = {key: i for i, key in enumerate(partitions)}
    runs: set[tuple[str, str | None]] = set()
    batches: set[str] = set()
    for run in filter(is_rd_task_run, instance.get_runs(filters=RunsFilter(statuses=IN_FLIGHT))):
        if PARTITION_TAG in run.tags:
            runs.add((run.tags[PARTITION_TAG], run.tags.get(FINGERPRINT_TAG)))
        first, last = order.get(run.tags.get(RANGE_START_TAG, "")), order.get(run.tags.get(RANGE_END_TAG, ""))
        if first is not None and last is not None:
            batches.update(partitions[first : last + 1])
    return InFlight(frozenset(runs), frozenset(batches))


def decide(rd_log_root: RdLogRoot, bundle_store: BundleStore, task_id: str, running: InFlight = InFlight()) -> Decision:
    """Whether ``task_id`` needs a run today, and why (each reason is logged by the schedule)."""
    try:
        session = session_fingerprint(rd_log_root.log_dir(task_id))
    except (RdAssetsError, OSError) as exc:
        return Decision(task_id, "log_dir_gone", str(exc))
    fp = session.token
    if session.snapshot_count == 0:
        return Decision(task_id, "no_snapshots", "the session has no snapshot yet", fp)
    try:
        record = bundle_store.publication(task_id)
    except (ValidationError, OSError) as exc:
        record, unreadable = None, f"publication record unreadable ({type(exc).__name__})"
    else:
        unreadable = None
    current = current_version_dir(bundle_store.path, task_id)
    if current is None or record is None:
        verdict, reason = "missing", unreadable or ("no published bundle" if current is None else "no record")
    elif record.session_fingerprint != fp:
        verdict, reason = "stale", f"published from fingerprint {record.session_fingerprint}, session is {fp}"
    elif Path(record.version_dir) != current:
        verdict, reason = "stale", f"the current version {current.name} is not the recorded one"
    else:
        return Decision(task_id, "fresh", "bundle matches the session", fp)
    try:
        failure = read_failure(bundle_store.path, task_id)
    except TaskStatusError as exc:  # an unreadable record proves nothing: run the task, which rewrites it
        failure, reason = None, f"{reason}; {exc.message}"
    if failure is not None and failure.fingerprint == fp:
        why = f"{failure.code}: {printable(failure.message)}"
        return Decision(task_id, "failed_before", f"{reason}, but this session already failed with {why}", fp)
    if (task_id, fp) in running.runs:
        return Decision(task_id, "in_flight", f"{reason}; a run for fingerprint {fp} is queued or running", fp)
    if (task_id, None) in running.runs:
        return Decision(task_id, "in_flight", f"{reason}; a run of it launched without a fingerprint is in flight", fp)
    if task_id in running.batches:
        return Decision(task_id, "in_flight", f"{reason}; a backfill batch that covers it is queued or running", fp)
    return Decision(task_id, verdict, reason, fp)


@schedule(
    name="rd_task_backfill_schedule",
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    job=rd_task_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily: runs partitions whose bundle is missing or stale, skipping deterministic failures.",
)
def rd_task_backfill_schedule(
    context: ScheduleEvaluationContext, rd_log_root: RdLogRoot, bundle_store: BundleStore
) -> list[RunRequest] | SkipReason:
    partitions = list(context.instance.get_dynamic_partitions(RD_TASK_PARTITIONS_NAME))
    running = in_flight(context.instance, partitions)
    decisions = [decide(rd_log_root, bundle_store, task_id, running) for task_id in partitions]
    for d in decisions:
        if d.verdict != "fresh":
            context.log.info(f"{d.task_id}: {d.verdict}: {d.reason}")
    requests = [
        RunRequest(
            partition_key=d.task_id,
            run_key=run_key(d.task_id, d.fingerprint or ""),
            tags={FINGERPRINT_TAG: d.fingerprint or ""},
        )
        for d in decisions
        if d.wants_run
    ]
    if requests:
        return requests
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d.verdict] = counts.get(d.verdict, 0) + 1
    return SkipReason(f"nothing missing or stale: {counts or 'no partitions'}")
