"""The JSON documents of a task's bundle: the two anchor views consumers poll, and the bundle's own documents.

The anchor views are derived from the manifest alone and serialised once per version (the hottest routes); the
documents are served byte for byte as published, with their sha256 as ETag.

Per-task routes are ``async``: they only resolve a symlink and open or read small files of the local store
(microseconds), which is cheaper inline than two thread hops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import APIRouter, Response
from fastapi.params import Depends
from pydantic import BaseModel

from rd_assets.api.bundle_reader import BundleReader, PinnedVersion
from rd_assets.api.responses import SessionAnchorResponse, SotaFactorAnchorResponse
from rd_assets.api.routers.common import (
    NOT_MODIFIED,
    TASK_ERRORS,
    IfNoneMatch,
    TaskId,
    etag_matches,
    pinned,
    version_headers,
)
from rd_assets.core.contracts.artifact_models import FactorOrder, ModelMeta
from rd_assets.core.contracts.bundle_models import SotaFactorsDoc


def build_router(reader: BundleReader, dependencies: Sequence[Depends]) -> APIRouter:
    router = APIRouter(tags=["documents"], dependencies=dependencies)

    def pinned_json(task_id: str, name: str, build: Callable[[PinnedVersion], bytes]) -> Response:
        """A response model derived from the manifest alone, serialised once per version (hot consumer routes)."""
        body = pinned(reader, task_id, lambda pin: reader.memo(pin, name, lambda: build(pin)))
        return Response(content=body, media_type="application/json")

    def document(task_id: str, role: str, model: type[BaseModel], if_none_match: str | None) -> Response:
        def answer(pin: PinnedVersion) -> Response:
            data, digest = reader.read_document(pin, role, model)
            headers = version_headers(pin, digest)
            if etag_matches(if_none_match, digest):
                return Response(status_code=304, headers=headers)
            return Response(content=data, media_type="application/json", headers=headers)

        return pinned(reader, task_id, answer)

    @router.get("/tasks/{task_id}/session_anchor", response_model=SessionAnchorResponse, responses=TASK_ERRORS)
    async def session_anchor(task_id: TaskId) -> Response:
        def build(pin: PinnedVersion) -> bytes:
            anchor = pin.manifest.session_anchor
            return SessionAnchorResponse(task_id=task_id, **anchor.model_dump()).model_dump_json().encode()

        return pinned_json(task_id, "session_anchor", build)

    @router.get("/tasks/{task_id}/sota_factor_anchor", response_model=SotaFactorAnchorResponse, responses=TASK_ERRORS)
    async def sota_factor_anchor(task_id: TaskId) -> Response:
        def build(pin: PinnedVersion) -> bytes:
            m, sota = pin.manifest, pin.manifest.sota_factor_anchor
            answer = SotaFactorAnchorResponse(
                task_id=task_id,
                hist_len=m.session_anchor.hist_len,
                chosen_session_file=m.session_anchor.chosen_session_file,
                source_session_dir_id=m.session_anchor.source_session_dir_id,
                last_sota_factor_index=sota.last_sota_factor_index,
                resolved_model_weight_key=sota.resolved_model_weight_key,
                resolved_model_weight_source=sota.resolved_model_weight_source,
                resolved_factor_entry_key=sota.resolved_factor_entry_key,
                factor_file_dict_keys=sota.factor_file_dict_keys,
                based_factor_entries=sota.based_factor_entries,
                selection_ready=m.selection_ready,
                reasons=m.reasons,
                content_hash=m.content_hash,
            )
            return answer.model_dump_json().encode()

        return pinned_json(task_id, "sota_factor_anchor", build)

    @router.get(
        "/tasks/{task_id}/sota_factors", response_model=SotaFactorsDoc, responses={**TASK_ERRORS, **NOT_MODIFIED}
    )
    async def sota_factors(task_id: TaskId, if_none_match: IfNoneMatch = None) -> Response:
        return document(task_id, "sota_factors", SotaFactorsDoc, if_none_match)

    @router.get("/tasks/{task_id}/factor_order", response_model=FactorOrder, responses={**TASK_ERRORS, **NOT_MODIFIED})
    async def factor_order(task_id: TaskId, if_none_match: IfNoneMatch = None) -> Response:
        return document(task_id, "factor_order", FactorOrder, if_none_match)

    @router.get("/tasks/{task_id}/model_meta", response_model=ModelMeta, responses={**TASK_ERRORS, **NOT_MODIFIED})
    async def model_meta(task_id: TaskId, if_none_match: IfNoneMatch = None) -> Response:
        return document(task_id, "model_meta", ModelMeta, if_none_match)

    return router
