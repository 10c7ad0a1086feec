"""The connection-level limits of :class:`rd_assets.api.limits.ApiLimits`: uvicorn's h11 protocol, guarded.

uvicorn has settings for the head size (``h11_max_incomplete_event_size``), the keep-alive timeout and the listen
backlog, and :func:`uvicorn_options` passes them. It has no timeout for a request head that arrives slowly (a
new connection that never speaks is held forever), none for a client that stops reading a download, and its
refusals are plain text. Its ``limit_concurrency`` also decides per request, so a kept-alive connection it
already served is refused once newer ones arrive. :class:`GuardedH11Protocol` adds those pieces and nothing else.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import h11
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from rd_assets.api.limits import ApiLimits, raw_refusal, refuse


class GuardedH11Protocol(H11Protocol):
    """One HTTP/1.1 connection under :class:`ApiLimits` (bound to a subclass by :func:`uvicorn_options`).

    * connection cap: decided when the connection opens, so the first ``max_connections`` keep being served and
      a later one gets a 503 to its first request (waiting for that request, bounded by the head limits, lets
      every client read the answer instead of a reset);
    * head timeout: from a connection's opening (or a kept-alive one's next byte) to its request's last header;
      a partial head gets a 408, a connection that never spoke is closed silently (as on keep-alive expiry),
      and so is one still trickling a request body after its answer was sent;
    * send timeout: a response whose client has not read enough to unblock our writes within ``send_timeout``
      is aborted (a slow reader that keeps reading is never cut);
    * a head over ``max_head_bytes`` gets a 431, or a 414 while still in the request line, as JSON.
    """

    limits: ClassVar[ApiLimits] = ApiLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.limits.max_connections
        if len(self.connections) > cap or len(self.tasks) >= cap:
            self.logger.warning("over_capacity: more than %d connections", cap)
            self.app = self._over_capacity
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_send_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_timer()
        super().data_received(data)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            self._cancel_head_timer()

    def send_400_response(self, msg: str) -> None:
        pending, cap = self.conn.trailing_data[0], self.limits.max_head_bytes
        if len(pending) <= cap:
            self._refuse(400, "bad_request", "malformed HTTP/1.1 request")
        elif b"\n" not in pending:
            self._refuse(414, "uri_too_long", f"request line over {cap} bytes")
        else:
            self._refuse(431, "header_too_large", f"request head over {cap} bytes")

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        self._cancel_send_timer()
        super().resume_writing()

    async def _over_capacity(self, scope: Scope, receive: Receive, send: Send) -> None:
        await refuse(send, 503, "over_capacity", f"more than {self.limits.max_connections} connections; retry")

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._refuse(408, "request_timeout", f"request head not complete within {self.limits.head_timeout:g} s")
        else:
            self.transport.close()

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.logger.warning("%s: %s", code, message)
        self.transport.write(raw_refusal(status, code, message))
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None


def uvicorn_options(limits: ApiLimits) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``: the guarded h11 protocol bound to ``limits``, and uvicorn's settings.

    ``ws="none"``: the API has no WebSocket route, and an upgrade would hand the socket to a protocol these
    limits do not cover.
    """
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
    return {
        "http": protocol,
        "ws": "none",
        "h11_max_incomplete_event_size": limits.max_head_bytes,
        "timeout_keep_alive": limits.keep_alive_timeout,
        "backlog": limits.backlog,
    }
