"""The Results API, assembled: read-only HTTP over published bundles (FastAPI), built by :func:`create_app`.

Why it looks like this: the service it replaces unpickled sessions per request and had a delete route that
accepted ``..``. This one only reads published bundle versions (:mod:`rd_assets.api.bundle_reader`), has no
route that writes (GET and HEAD only, anything else is 405), no CORS unless someone adds it on purpose, and an
optional bearer token (:mod:`rd_assets.api.security`). This module only puts the pieces together: settings,
error handlers, routers, middleware. Order of checks on a request: limits (outermost middleware), then HEAD as
GET, then routing, then the token, then the route.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, Security
from fastapi.params import Depends

from rd_assets import __version__
from rd_assets.api.bundle_reader import BundleReader
from rd_assets.api.errors import add_exception_handlers
from rd_assets.api.head import HeadAsGet
from rd_assets.api.limits import RequestGuard
from rd_assets.api.routers import docs, documents, files, health, tasks
from rd_assets.api.security import BearerToken
from rd_assets.api.settings import ApiSettings

TITLE = "rd-assets Results API"


def create_app(settings: ApiSettings) -> FastAPI:
    """The API over ``settings.store``; with ``settings.api_token`` every route but ``/health`` requires it."""
    reader = BundleReader(settings.store)
    bearer = BearerToken(settings.api_token) if settings.api_token is not None else None
    app = FastAPI(
        title=TITLE,
        version=__version__,
        description="Read-only access to published RD-Agent consumer bundles. GET/HEAD only.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    add_exception_handlers(app, unrouted_guard=bearer)
    protected: Sequence[Depends] = [Security(bearer)] if bearer is not None else []
    _add_routes(app, health.router)
    _add_routes(app, docs.build_router(protected))
    for build in (tasks.build_router, documents.build_router, files.build_router):
        _add_routes(app, build(reader, protected))
    app.add_middleware(HeadAsGet)
    app.add_middleware(RequestGuard, limits=settings.limits)
    return app


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """Put ``router``'s routes straight into the app's route table.

    Why not ``include_router``: since FastAPI 0.137 an included router stays a node of a tree that every request
    walks through, and five of them cost the hottest route (``sota_factor_anchor``) about 15% of its time inside
    the app. Each route already carries its router's dependencies (FastAPI merges them when the route is
    declared), so the token check is not lost; a test checks that OpenAPI marks every route but /health.
    """
    app.router.routes.extend(router.routes)
