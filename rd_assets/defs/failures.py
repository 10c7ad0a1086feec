"""A typed error of the core as the ``dagster.Failure`` that ends the step: code and message, details as metadata.

The message may quote untrusted text, so the description shown in the UI escapes control and bidi
characters; the metadata keeps the exact (UTF-8 encodable) text. A failure the task's own session caused would
recur on a retry, so its run is marked not to be retried (:func:`no_retry`); any other failure is retried as
``deploy/dagster.yaml`` says.
"""

from __future__ import annotations

from dagster import AssetExecutionContext, AssetKey, Failure, MetadataValue

from rd_assets.core.errors import RdAssetsError
from rd_assets.core.text_safety import printable
from rd_assets.defs.metadata import text_or_null


def failure(exc: RdAssetsError, *, asset: AssetKey) -> Failure:
    """The step failure for ``exc``, met while resolving ``asset``."""
    return Failure(
        description=printable(f"{exc.code}: {exc.message}"),
        metadata={
            "error_code": MetadataValue.text(exc.code),
            "message": text_or_null(exc.message),
            "path": text_or_null(exc.path),
            "asset": MetadataValue.text(asset.to_user_string()),
        },
    )


MAX_LISTED = 20
"""Failed tasks named in a batch failure's description; all of them are in its metadata."""


def batch_failure(failed: dict[str, Failure], *, tasks: int) -> Failure:
    """The step failure of a batch in which the tasks ``failed`` (each with its own failure) did not publish."""
    lines = [f"{task_id}: {exc.description}" for task_id, exc in failed.items()]
    more = f"\n(and {len(lines) - MAX_LISTED} more, see metadata)" if len(lines) > MAX_LISTED else ""
    return Failure(
        description=f"{len(failed)} of {tasks} tasks failed:\n" + "\n".join(lines[:MAX_LISTED]) + more,
        metadata={
            "failed_tasks": MetadataValue.json({task_id: exc.description for task_id, exc in failed.items()}),
            "failed": MetadataValue.int(len(failed)),
            "tasks": MetadataValue.int(tasks),
        },
    )


RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"
"""The run tag the daemon's run retries read to override ``run_retries.retry_on_asset_or_op_failure``."""


def no_retry(context: AssetExecutionContext) -> None:
    """Mark the run not to be retried: it failed only for reasons its tasks' sessions would give again.

    The daemon then logs "Not retrying run since it failed due to an asset or op failure" on the run instead of
    re-running it (twice, with ``deploy/dagster.yaml``); a new snapshot changes the session and the sensor
    requests a new run. An outage, a killed worker or a store error never reaches here and is retried.
    """
    context.instance.add_run_tags(context.run.run_id, {RETRY_ON_STEP_FAILURE_TAG: "false"})


def batch_stopped(
    task_id: str, error: BaseException, *, published: int, failed: dict[str, Failure], tasks: int
) -> Failure:
    """The step failure of a batch stopped at ``task_id`` by an error that is not the task's (retried as a whole)."""
    what = error.description if isinstance(error, Failure) else f"{type(error).__name__}: {error}"
    before = f"{published} published" + (f", {len(failed)} failed ({', '.join(failed)})" if failed else "")
    position = f"{published + len(failed) + 1} of {tasks}"
    return Failure(
        description=printable(f"the batch stopped at {task_id} ({position}): {what}; before it: {before}"),
        metadata={
            "stopped_at": MetadataValue.text(task_id),
            "error": MetadataValue.text(printable(what)),
            "published": MetadataValue.int(published),
            "failed_tasks": MetadataValue.json({t: exc.description for t, exc in failed.items()}),
            "tasks": MetadataValue.int(tasks),
        },
    )
