"""Task status documents: what the store says about a task beyond its published bundle.

A failed extraction publishes nothing, so without a record a failed task and a task nobody has seen look alike
(no bundle). :class:`TaskFailure` is that record; it lives beside the bundles (``<store>/.task_status/``), never
inside a published version, so a bundle's bytes and ``content_hash`` stay a pure function of its log dir.
"""

from __future__ import annotations

from pydantic import Field

from rd_assets.core.contracts.models import Document


class TaskFailure(Document):
    """Why the last extraction of a task failed, for a reason the same session would hit again."""

    task_id: str
    code: str = Field(description="the typed error's stable code, e.g. no_snapshot, weights_not_persisted")
    message: str
    path: str | None = Field(None, description="the file or folder the error concerns, when it names one")
    fingerprint: str | None = Field(
        None, description="session fingerprint (snapshot count-total size-newest mtime_ns) of the failed attempt"
    )
    failed_at_utc: str = Field(description="when the failure was recorded (ISO 8601, UTC)")
