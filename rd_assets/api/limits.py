"""Limits of the Results API, all enforced before the bearer token is checked and before any route runs.

Why: a red-team run sent a 1 GiB header block (uvicorn's default httptools parser buffered all of it, 1.1 GiB
RSS before the token check) over as many connections as it liked. Each layer does only what the one below it
cannot:

* uvicorn settings and :class:`rd_assets.api.protocol.GuardedH11Protocol` (per connection): h11 instead of
  httptools because h11 refuses a head that outgrows ``max_head_bytes`` while it is still arriving, plus the
  connection cap, the keep-alive, head and send timeouts, and JSON refusals instead of uvicorn's plain text.
* :class:`RequestGuard` (pure ASGI, per request): header count, exact header bytes (one socket read can carry
  a head past h11's limit), URL length, and the time a route may take before it starts its answer.

Every refusal is the API's error envelope ``{"ok": false, "error": {"code", "message"}}`` and closes the
connection: a client that broke a limit once is not trusted with a kept-alive one.

This module stays free of uvicorn imports so that ``rd-assets`` can build its flags without loading a server.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rd_assets.api.responses import error_envelope


def _limit(default: float, why: str) -> Any:
    """A positive, finite limit; ``why`` is its one-line reason (also the ``rd-assets serve`` flag's help)."""
    return Field(default, gt=0, allow_inf_nan=False, description=why)


class ApiLimits(BaseModel):
    """Every limit of the API in one place; ``rd-assets serve --<field-name-with-dashes>`` overrides each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_head_bytes: int = _limit(
        32 * 1024, "request line + headers held before the token check; real clients send under 2 KiB (431)"
    )
    max_header_count: int = _limit(100, "each header is parsed and scanned before the token check (431)")
    max_url_bytes: int = _limit(8 * 1024, "path + query; the longest real one has a key of at most 512 chars (414)")
    max_connections: int = _limit(100, "each connection holds a socket, buffers and maybe a handler (503 beyond)")
    backlog: int = _limit(128, "connections the kernel queues unaccepted; a deep queue only delays the 503")
    keep_alive_timeout: int = _limit(5, "seconds an idle kept-alive connection may hold a slot (closed silently)")
    head_timeout: float = _limit(10.0, "seconds to receive a request head, from connect or its first byte (408)")
    handler_timeout: float = _limit(30.0, "seconds a route may take to start its answer; streaming is not cut (503)")
    send_timeout: float = _limit(60.0, "seconds a download may wait on a client that reads nothing (aborted)")


def _refusal(status: int, code: str, message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = error_envelope(code, message).model_dump_json().encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    return headers, body


async def refuse(send: Send, status: int, code: str, message: str) -> None:
    """Answer with the error envelope through ASGI (uvicorn then closes the connection)."""
    headers, body = _refusal(status, code, message)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def raw_refusal(status: int, code: str, message: str) -> bytes:
    """The same answer as wire bytes, for the protocol layer, where no request (and so no ASGI cycle) exists."""
    headers, body = _refusal(status, code, message)
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode(), *(k + b": " + v for k, v in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class RequestGuard:
    """The per-request limits; installed outermost, so it runs before the bearer token check and every route."""

    def __init__(self, app: ASGIApp, limits: ApiLimits) -> None:
        self.app = app
        self.limits = limits

    def _violation(self, scope: Scope) -> tuple[int, str, str] | None:
        limits, headers = self.limits, scope["headers"]
        if len(headers) > limits.max_header_count:
            return 431, "too_many_headers", f"more than {limits.max_header_count} request headers"
        if sum(len(name) + len(value) + 4 for name, value in headers) > limits.max_head_bytes:
            return 431, "header_too_large", f"request headers over {limits.max_head_bytes} bytes"
        path, query = scope.get("raw_path") or scope["path"].encode(), scope.get("query_string", b"")
        if len(path) + (len(query) + 1 if query else 0) > limits.max_url_bytes:
            return 414, "uri_too_long", f"request URL over {limits.max_url_bytes} bytes"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        violation = self._violation(scope)
        if violation is not None:
            await refuse(send, *violation)
            return
        await self._within_budget(scope, receive, send)

    async def _within_budget(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the route; answer 503 if it has not started its answer within ``handler_timeout``.

        The 503 goes out at the deadline even when the route is stuck in a worker thread (which cannot be
        interrupted; it is cancelled when the thread returns and its messages are dropped). Once the answer has
        started, the budget no longer applies: a long download is limited by ``send_timeout`` (a client that
        stops reading), not by its duration. A plain timer, not a watchdog task: this runs on every request.
        """
        loop = asyncio.get_running_loop()
        started = False
        refusal: asyncio.Task[None] | None = None

        async def send_unless_refused(message: Message) -> None:
            nonlocal started
            if refusal is not None:
                return
            if message["type"] == "http.response.start":
                started = True
                timer.cancel()
            await send(message)

        with anyio.CancelScope() as handling:

            def expire() -> None:
                nonlocal refusal
                if not started:
                    budget = self.limits.handler_timeout
                    refusal = loop.create_task(refuse(send, 503, "handler_timeout", f"no answer within {budget:g} s"))
                    handling.cancel()

            timer = loop.call_later(self.limits.handler_timeout, expire)
            try:
                await self.app(scope, receive, send_unless_refused)
            finally:
                timer.cancel()
        if refusal is not None:
            await refusal
