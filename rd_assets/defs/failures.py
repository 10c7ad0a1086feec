"""A typed error of the core as the ``dagster.Failure`` that ends the step: code and message, details as metadata.

The message may quote untrusted text, so the description shown in the UI escapes control and bidi
characters; the metadata keeps the exact (UTF-8 encodable) text.
"""

from __future__ import annotations

from dagster import AssetKey, Failure, MetadataValue

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
