"""``/tasks`` (every task with its state), ``/tasks/{task_id}`` (the manifest) and ``/tasks/{task_id}/status``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.params import Depends

from rd_assets.api.bundle_reader import BundleReader, PinnedVersion
from rd_assets.api.errors import documented
from rd_assets.api.responses import ErrorBody, ListedState, TaskList, TaskProblem, TaskStatus
from rd_assets.api.routers.common import (
    NOT_MODIFIED,
    TASK_ERRORS,
    IfNoneMatch,
    TaskId,
    etag_matches,
    pinned,
    version_headers,
)
from rd_assets.api.task_states import listing, task_status
from rd_assets.core.contracts.bundle_models import Manifest


def build_router(reader: BundleReader, dependencies: Sequence[Depends]) -> APIRouter:
    router = APIRouter(tags=["tasks"], dependencies=dependencies)

    @router.get("/tasks", response_model=TaskList, responses=documented(401, 422, 500))
    def tasks(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
        state: Annotated[ListedState | None, Query(description="only tasks in this state")] = None,
    ) -> TaskList:
        """Published and failed tasks, newest first (runs in the thread pool: it reads the whole store)."""
        found = listing(reader, state)
        return TaskList(
            total=len(found.summaries),
            limit=limit,
            offset=offset,
            tasks=found.summaries[offset : offset + limit],
            problems=[
                TaskProblem(task_id=t, error=ErrorBody(code=e.code, message=e.message)) for t, e in found.problems
            ],
        )

    @router.get("/tasks/{task_id}", response_model=Manifest, responses={**TASK_ERRORS, **NOT_MODIFIED})
    async def manifest(task_id: TaskId, if_none_match: IfNoneMatch = None) -> Response:
        def answer(pin: PinnedVersion) -> Response:
            digest = reader.memo(pin, "manifest_sha256", lambda: hashlib.sha256(pin.manifest_bytes).hexdigest())
            headers = version_headers(pin, digest)
            if etag_matches(if_none_match, digest):
                return Response(status_code=304, headers=headers)
            return Response(content=pin.manifest_bytes, media_type="application/json", headers=headers)

        return pinned(reader, task_id, answer)

    @router.get("/tasks/{task_id}/status", response_model=TaskStatus, responses=documented(401, 422, 500, 503))
    def status(task_id: TaskId) -> TaskStatus:
        """ready / published_not_ready / failed (with the recorded reason) / unknown (never seen): always 200."""
        return task_status(reader, task_id)

    return router
