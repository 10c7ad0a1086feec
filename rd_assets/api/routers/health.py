"""``/health``: the one route without the token, so a probe can tell the process is up without a secret."""

from __future__ import annotations

from fastapi import APIRouter

from rd_assets import __version__
from rd_assets.api.responses import Health

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    return Health(version=__version__)
