"""The bearer token as a FastAPI ``Security`` dependency, so ``/openapi.json`` documents the scheme it enforces.

Why a dependency and not a middleware: a middleware guarded the routes too, but OpenAPI could not say so, and
clients (and schemathesis) had to be told out of band. The check itself is unchanged: exactly one
``Authorization: Bearer <token>`` header, the scheme case-insensitive, the token compared in constant time.
The limits of :mod:`rd_assets.api.limits` still run first: they sit in middleware outside every route.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import HTTPBearer
from pydantic import SecretStr

from rd_assets.api.errors import UnauthorizedError

SCHEME_NAME = "bearerToken"


class BearerToken(HTTPBearer):
    """Requires ``Authorization: Bearer <token>``; a refusal is the API's 401 ``unauthorized`` envelope."""

    def __init__(self, token: SecretStr) -> None:
        super().__init__(
            scheme_name=SCHEME_NAME,
            description="`Authorization: Bearer <RD_ASSETS_API_TOKEN>`; every route but /health requires it.",
            auto_error=False,
        )
        self._token = token.get_secret_value().encode("utf-8")

    def authorized(self, request: Request) -> bool:
        """One Authorization header (two could smuggle a second credential past a proxy) with our token."""
        values = request.headers.getlist("authorization")
        if len(values) != 1:
            return False
        scheme, _, given = values[0].partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1"), self._token)

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        if not self.authorized(request):
            raise UnauthorizedError("missing or wrong bearer token")
