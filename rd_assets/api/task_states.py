"""Each task's state as the store tells it: ready, published but not ready, failed, or unknown.

Why it needs both halves of the store: a published bundle says whether it is selection-ready, and a failure
record (:mod:`rd_assets.core.bundle.task_status`) says the last extraction failed. A record wins: it is removed
when the task publishes, so while it exists the latest attempt failed, even if an older bundle is still served
(its fields stay in the answer). Neither half: the task was never seen. Files the verifier found damaged are
listed with the task, whatever its state.
"""

from __future__ import annotations

from dataclasses import dataclass

from rd_assets.api.bundle_reader import BundleReader, PinnedVersion, check_task_id
from rd_assets.api.errors import TaskNotFoundError
from rd_assets.api.responses import ListedState, TaskState, TaskStatus, TaskSummary
from rd_assets.core.bundle.task_status import failed_task_ids, read_failure
from rd_assets.core.contracts.status_models import TaskFailure
from rd_assets.core.errors import RdAssetsError


@dataclass(frozen=True)
class Published:
    """The facts of one published version that a summary shows (memoised per version)."""

    generated_at_utc: str
    selection_ready: bool
    factor_count: int
    content_hash: str
    version: str
    reasons: list[str]


@dataclass(frozen=True)
class TaskListing:
    summaries: list[TaskSummary]
    problems: list[tuple[str, RdAssetsError]]


def _published(reader: BundleReader, pinned: PinnedVersion) -> Published:
    def build() -> Published:
        manifest = pinned.manifest
        return Published(
            generated_at_utc=manifest.generated_at_utc,
            selection_ready=manifest.selection_ready,
            factor_count=len(reader.sota_factors(pinned).factors),
            content_hash=manifest.content_hash,
            version=pinned.version,
            reasons=list(manifest.reasons),
        )

    return reader.memo(pinned, "published", build)


def state_of(published: Published | None, failure: TaskFailure | None) -> TaskState:
    if failure is not None:
        return "failed"
    if published is None:
        return "unknown"
    return "ready" if published.selection_ready else "published_not_ready"


def _summary_fields(
    reader: BundleReader, task_id: str, pinned: PinnedVersion | None, failure: TaskFailure | None
) -> dict[str, object]:
    published = _published(reader, pinned) if pinned is not None else None
    fields: dict[str, object] = {"task_id": task_id, "state": state_of(published, failure), "failure": failure}
    if pinned is not None and published is not None:
        fields.update(vars(published))
        fields["corrupt_files"] = reader.corrupt_files(pinned)
    return fields


def _pin_published(reader: BundleReader, task_id: str) -> PinnedVersion | None:
    try:
        return reader.pin(task_id)
    except TaskNotFoundError:
        return None


def task_status(reader: BundleReader, task_id: str) -> TaskStatus:
    """The state of one task; a task with neither a bundle nor a failure record is ``unknown``."""
    check_task_id(task_id)
    failure = read_failure(reader.store, task_id)
    return TaskStatus(**_summary_fields(reader, task_id, _pin_published(reader, task_id), failure))


def listing(reader: BundleReader, state: ListedState | None = None) -> TaskListing:
    """Every published or failed task in ``state`` (all when None), newest first; unreadable entries reported."""
    summaries, problems = [], []
    failed = set(failed_task_ids(reader.store))
    for task_id in sorted(failed | set(reader.task_ids())):
        try:
            failure = read_failure(reader.store, task_id) if task_id in failed else None
            summary = TaskSummary(**_summary_fields(reader, task_id, _pin_published(reader, task_id), failure))
        except RdAssetsError as exc:
            problems.append((task_id, exc))
            continue
        if summary.state != "unknown" and state in (None, summary.state):
            summaries.append(summary)
    summaries.sort(key=_newest_first, reverse=True)
    return TaskListing(summaries, problems)


def _newest_first(summary: TaskSummary) -> tuple[str, str]:
    when = summary.generated_at_utc or (summary.failure.failed_at_utc if summary.failure else "")
    return when, summary.task_id
