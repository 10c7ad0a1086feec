"""``rd_task_sensor``: turn new and growing task log dirs into partitions and runs, by stat only.

Every tick lists the log root once and stats each task's snapshot files (:mod:`rd_assets.core.session.fingerprint`);
nothing is opened. A task id with a ``__session__`` folder becomes a partition; a run is requested when
its fingerprint differs from the one the cursor remembers, with ``run_key = "<task_id>:<fingerprint>"``
so the same session state is never run twice, even if the cursor is lost.
"""

from dataclasses import dataclass, field

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from pydantic import ValidationError

from rd_assets.core.contracts.models import Document
from rd_assets.core.errors import RdAssetsError
from rd_assets.core.session.fingerprint import LogRootScan, scan_log_root, session_fingerprint
from rd_assets.defs.jobs import rd_task_job
from rd_assets.defs.partitions import FINGERPRINT_TAG, RD_TASK_PARTITIONS_NAME, rd_task_partitions
from rd_assets.defs.resources import RdLogRoot

MINIMUM_INTERVAL_SECONDS = 15


class SensorCursor(Document):
    """The sensor's memory: the fingerprint each task had when its last run was requested."""

    fingerprints: dict[str, str] = {}

    @classmethod
    def parse(cls, raw: str | None) -> "SensorCursor":
        """An empty cursor starts fresh; an unreadable one is an error (reset it in the UI to start over)."""
        if not raw:
            return cls()
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise ValueError(f"rd_task_sensor cursor is not a SensorCursor: {exc.errors()[0]['msg']}") from exc


@dataclass
class TickPlan:
    new_partitions: list[str]
    run_requests: list[RunRequest]
    cursor: SensorCursor
    unchanged: int = 0
    without_snapshots: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)


def run_key(task_id: str, fingerprint: str) -> str:
    return f"{task_id}:{fingerprint}"


def plan_tick(scan: LogRootScan, previous: SensorCursor, known_partitions: set[str]) -> TickPlan:
    """What one tick does, given the scan, the cursor and the partitions the instance already has."""
    plan = TickPlan(
        new_partitions=[t for t in scan.tasks if t not in known_partitions],
        run_requests=[],
        cursor=SensorCursor(),
    )
    for task_id, log_dir in scan.tasks.items():
        try:
            fp = session_fingerprint(log_dir)
        except (RdAssetsError, OSError) as exc:  # the dir vanished or became unreadable mid-scan
            plan.unreadable[task_id] = str(exc)
            if task_id in previous.fingerprints:
                plan.cursor.fingerprints[task_id] = previous.fingerprints[task_id]
            continue
        if fp.snapshot_count == 0:
            plan.without_snapshots.append(task_id)
            continue
        plan.cursor.fingerprints[task_id] = fp.token
        if previous.fingerprints.get(task_id) == fp.token:
            plan.unchanged += 1
            continue
        plan.run_requests.append(
            RunRequest(partition_key=task_id, run_key=run_key(task_id, fp.token), tags={FINGERPRINT_TAG: fp.token})
        )
    return plan


@sensor(
    name="rd_task_sensor",
    job=rd_task_job,
    minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds a partition per RD-Agent task log dir and requests a run when its session changes.",
)
def rd_task_sensor(context: SensorEvaluationContext, rd_log_root: RdLogRoot) -> SensorResult:
    scan = scan_log_root(rd_log_root.root)
    previous = SensorCursor.parse(context.cursor)
    known = set(context.instance.get_dynamic_partitions(RD_TASK_PARTITIONS_NAME))
    plan = plan_tick(scan, previous, known)
    summary = (
        f"{len(scan.tasks)} tasks ({len(plan.new_partitions)} new, {len(plan.run_requests)} to run, "
        f"{plan.unchanged} unchanged, {len(plan.without_snapshots)} without snapshots yet); "
        f"{scan.ignored_count} ignored names, {len(scan.without_session)} task dirs without __session__"
    )
    context.log.info(summary)
    if scan.ignored:
        context.log.info(f"ignored names in {rd_log_root.root}: {', '.join(scan.ignored[:20])}")
    for task_id, why in plan.unreadable.items():
        context.log.warning(f"task {task_id} could not be fingerprinted: {why}")
    return SensorResult(
        run_requests=plan.run_requests,
        dynamic_partitions_requests=[rd_task_partitions.build_add_request(plan.new_partitions)]
        if plan.new_partitions
        else [],
        cursor=plan.cursor.model_dump_json(),
        skip_reason=None if plan.run_requests else f"no new or changed sessions: {summary}",
    )
