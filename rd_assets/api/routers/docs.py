"""``/openapi.json``, ``/docs`` and ``/redoc`` as ordinary routes, so the token guards them like every other.

FastAPI's built-in documentation routes take no dependencies; these replace them (the app is created with
``openapi_url=None``), and are left out of the schema they serve.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.params import Depends
from fastapi.responses import HTMLResponse, JSONResponse

OPENAPI_URL = "/openapi.json"


def build_router(dependencies: Sequence[Depends]) -> APIRouter:
    router = APIRouter(include_in_schema=False, dependencies=dependencies)

    @router.get(OPENAPI_URL)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - docs")

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc")

    return router
