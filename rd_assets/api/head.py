"""HEAD answered as GET without the body: FastAPI routes are GET only, so there is one route table and no twins."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEAD_FLAG = "rd_assets.head_request"
"""Scope key set on a HEAD request turned into a GET, so a streamed body knows not to read its files at all."""


class HeadAsGet:
    """Runs a HEAD request as a GET and drops every body chunk (headers, status and Content-Length are kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", HEAD_FLAG: True}, receive, send_headers_only)
