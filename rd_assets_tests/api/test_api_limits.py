"""The API's limits against a real ``rd-assets serve`` on 127.0.0.1, driven with raw sockets.

The server runs with tight limits (``LIMIT_FLAGS``) and a token; every limited request carries that valid token,
so an answer other than the refusal (a 200) is exactly what the test would see without the limit. The time a
route may take before answering is checked in-process: no real route is slow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rd_assets.api.limits import ApiLimits, RequestGuard
from rd_assets.core.bundle.store import publish_bundle
from rd_assets_tests.api.support import PLAIN_TASK, RD_ASSETS, Server, extract_samples, serving, with_weight

TOKEN = "limits-token-42"
MAX_HEAD = 16 * 1024
MAX_HEADERS = 20
MAX_URL = 1024
MAX_CONNECTIONS = 4
KEEP_ALIVE_S = 1
HEAD_TIMEOUT_S = 1.5
SEND_TIMEOUT_S = 1.0
LIMIT_FLAGS = [
    f"--max-head-bytes={MAX_HEAD}",
    f"--max-header-count={MAX_HEADERS}",
    f"--max-url-bytes={MAX_URL}",
    f"--max-connections={MAX_CONNECTIONS}",
    f"--keep-alive-timeout={KEEP_ALIVE_S}",
    f"--head-timeout={HEAD_TIMEOUT_S}",
    "--handler-timeout=1",
    f"--send-timeout={SEND_TIMEOUT_S}",
]
WEIGHT_BYTES = 16 * 1024 * 1024
"""Far more than the socket buffers between server and client, so a client that stops reading blocks the server."""
SLACK_S = 2.0


@pytest.fixture(scope="module")
def weight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A store whose PLAIN_TASK weight is large (published by the real publisher), and that weight."""
    store = tmp_path_factory.mktemp("limits") / "store"
    contents = extract_samples(store)
    data = random.Random(7).randbytes(WEIGHT_BYTES)
    publish_bundle(store, with_weight(contents[PLAIN_TASK], data, generated_at_utc="2030-01-01T00:00:00Z"))
    return store, data


@pytest.fixture(scope="module")
def server(weight: tuple[Path, bytes]) -> Iterator[Server]:
    with serving(weight[0], token=TOKEN, args=LIMIT_FLAGS) as running:
        yield running


def port_of(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


@contextlib.contextmanager
def connected(server: Server, *, timeout: float = 5.0, rcvbuf: int | None = None) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    try:
        sock.connect(("127.0.0.1", port_of(server)))
        yield sock
    finally:
        sock.close()


def request(target: str = "/tasks", *, extra: list[str] | None = None, token: bool = True) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        lines.append(f"Authorization: Bearer {TOKEN}")
    return ("\r\n".join([*lines, *(extra or [])]) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-cased headers, body of Content-Length bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    return int(status_line.split()[1]), headers, body


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset counts as closed); a socket timeout fails the test."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def assert_refused(answer: tuple[int, dict[str, str], bytes], status: int, code: str) -> None:
    got_status, headers, body = answer
    assert (got_status, headers["content-type"], headers["connection"]) == (status, "application/json", "close")
    doc = json.loads(body)
    assert doc["ok"] is False and doc["error"]["code"] == code and doc["error"]["message"]


def ask(server: Server, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with connected(server) as sock:
        sock.sendall(raw)
        return read_response(sock)


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/{pid}/status")


def flood(server: Server, start: bytes, mib: int) -> bytes:
    """Send ``start`` and ``mib`` MiB more of the same line, never ending the head; returns what the server said.

    The server may close while we still send, and then resets the connection: its answer can be lost, so
    callers accept no answer at all, as long as the connection was closed (a socket timeout fails the test).
    """
    with connected(server) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(start)
            for _ in range(mib):
                sock.sendall(b"f" * (1 << 20))
        return read_until_closed(sock)


def test_a_valid_request_with_the_token_still_works(server: Server) -> None:
    status, _, body = ask(server, request(extra=[f"X-Pad: {'p' * 8000}"]))
    assert status == 200 and json.loads(body)["ok"] is True
    assert ask(server, request(token=False))[0] == 401
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        assert client.get("/tasks").json()["total"] == 3
        assert client.head(f"/tasks/{PLAIN_TASK}/bundle.tar").status_code == 200


def test_a_header_block_over_the_cap_is_refused_before_it_fills_memory(server: Server) -> None:
    over = request(extra=[f"X-Big: {'b' * (MAX_HEAD + 1024)}"])  # whole head in one read: h11 parses, guard refuses
    assert_refused(ask(server, over), 431, "header_too_large")

    flood_mib = 64
    before_hwm, before_rss = vm_kib(server.pid, "VmHWM"), vm_kib(server.pid, "VmRSS")
    answer = flood(server, b"GET /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ", flood_mib)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    growth_mib = (vm_kib(server.pid, "VmHWM") - before_hwm) / 1024
    assert growth_mib < 16, f"peak RSS grew {growth_mib:.0f} MiB while {flood_mib} MiB of header were sent"
    assert (vm_kib(server.pid, "VmRSS") - before_rss) / 1024 < 16
    assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200


def test_too_many_headers_are_refused(server: Server) -> None:
    at_cap = request(extra=[f"X-H{i}: v" for i in range(MAX_HEADERS - 2)])  # + Host + Authorization
    assert ask(server, at_cap)[0] == 200
    over = request(extra=[f"X-H{i}: v" for i in range(MAX_HEADERS - 1)])
    assert_refused(ask(server, over), 431, "too_many_headers")


def test_an_over_long_request_line_is_refused(server: Server) -> None:
    def padded(url_bytes: int) -> str:
        return "/tasks?pad=" + "u" * (url_bytes - len("/tasks?pad="))

    assert ask(server, request(padded(MAX_URL)))[0] == 200
    assert_refused(ask(server, request(padded(MAX_URL + 1))), 414, "uri_too_long")
    answer = flood(server, b"GET /tasks?pad=", 1)  # past the head cap while still in the request line
    assert answer == b"" or answer.startswith(b"HTTP/1.1 414 ")


def test_a_malformed_request_gets_the_error_envelope(server: Server) -> None:
    assert_refused(ask(server, b"NOT HTTP AT ALL\r\n\r\n"), 400, "bad_request")


def open_connections(server: Server) -> int:
    """Connections the server still holds (its side ESTABLISHED or CLOSE_WAIT), from /proc/net/tcp."""
    port = f":{port_of(server):04X}"
    rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
    return sum(1 for row in rows if row[1].endswith(port) and row[3] in ("01", "08"))


def test_connections_over_the_cap_get_503_while_the_allowed_ones_are_served(server: Server) -> None:
    deadline = time.monotonic() + SLACK_S  # earlier tests' connections must be gone, or they would hold slots
    while open_connections(server):
        assert time.monotonic() < deadline, "the server still holds connections of earlier tests"
        time.sleep(0.05)
    with contextlib.ExitStack() as stack:
        allowed = [stack.enter_context(connected(server)) for _ in range(MAX_CONNECTIONS)]
        for sock in allowed:
            sock.sendall(request("/health", token=False))
            assert read_response(sock)[0] == 200
        for _ in range(2):
            with connected(server) as extra:
                extra.sendall(request())
                answer = read_response(extra)
                assert_refused(answer, 503, "over_capacity")
                assert answer[1]["retry-after"] == "1"
                assert read_until_closed(extra) == b""
        for sock in allowed:  # kept alive: their next requests are still answered
            sock.sendall(request())
            assert read_response(sock)[0] == 200
    deadline = time.monotonic() + SLACK_S  # the server notices the closes asynchronously
    while open_connections(server):
        assert time.monotonic() < deadline, "slots were not released after the clients closed"
        time.sleep(0.05)
    assert ask(server, request())[0] == 200


def test_a_slow_head_is_closed_after_the_timeout(server: Server) -> None:
    """A client trickling headers (each byte well within any idle timeout) and one that never speaks."""
    limit = HEAD_TIMEOUT_S + SLACK_S
    with connected(server, timeout=0.25) as slow, connected(server, timeout=limit) as silent:
        start = time.monotonic()
        slow.sendall(b"GET /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = b""
        while time.monotonic() - start < limit:
            with contextlib.suppress(TimeoutError):
                answer = slow.recv(65536)
                break
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                slow.sendall(b"X-Slow: 1\r\n")
        slow_after = time.monotonic() - start
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"request_timeout"' in answer
        assert HEAD_TIMEOUT_S - 0.2 < slow_after < limit
        assert read_until_closed(silent) == b""
        assert time.monotonic() - start < limit


def test_an_idle_kept_alive_connection_is_closed(server: Server) -> None:
    with connected(server, timeout=KEEP_ALIVE_S + SLACK_S) as sock:
        sock.sendall(request())
        assert read_response(sock)[0] == 200
        start = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - start < KEEP_ALIVE_S + 0.5


def start_download(sock: socket.socket) -> tuple[int, bytes]:
    """Ask for the large weight and read its response head; returns (Content-Length, body bytes read so far)."""
    sock.sendall(request(f"/tasks/{PLAIN_TASK}/asset_bytes?key=model.pkl"))
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head[:100]
    length = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return int(length.split(b":")[1]), body


def read_body(sock: socket.socket, length: int, body: bytes, *, bytes_per_s: float | None = None) -> bytes:
    """The rest of a body of ``length`` bytes, at most ``bytes_per_s`` fast; stops early if the server cuts it."""
    chunks, got, start = [body], len(body), time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        while got < length and (chunk := sock.recv(65536)):
            chunks.append(chunk)
            got += len(chunk)
            if bytes_per_s is not None:
                time.sleep(max(0.0, start + got / bytes_per_s - time.monotonic()))
    return b"".join(chunks)


def test_a_download_slower_than_every_timeout_completes(server: Server, weight: tuple[Path, bytes]) -> None:
    seconds = HEAD_TIMEOUT_S + 0.5  # also longer than the keep-alive, handler and send timeouts
    with connected(server, timeout=10) as sock:
        start = time.monotonic()
        length, first = start_download(sock)
        body = read_body(sock, length, first, bytes_per_s=WEIGHT_BYTES / seconds)
        assert time.monotonic() - start > HEAD_TIMEOUT_S
    assert length == len(body) == WEIGHT_BYTES
    assert hashlib.sha256(body).digest() == hashlib.sha256(weight[1]).digest()


def test_a_client_that_stops_reading_is_cut_off(server: Server) -> None:
    with connected(server, timeout=10, rcvbuf=4096) as sock:
        length, first = start_download(sock)
        time.sleep(SEND_TIMEOUT_S + SLACK_S)  # reads nothing: the server's writes block
        body = read_body(sock, length, first)
    assert length == WEIGHT_BYTES and len(body) < length


def run_guarded(app: ASGIApp, handler_timeout: float) -> list[tuple[float, Message]]:
    """``app`` behind :class:`RequestGuard` for one GET; returns each sent message with its time since the start."""
    sent: list[tuple[float, Message]] = []
    scope = {"type": "http", "method": "GET", "path": "/x", "raw_path": b"/x", "query_string": b"", "headers": []}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append((time.monotonic() - start, message))

    start = time.monotonic()
    anyio.run(RequestGuard(app, ApiLimits(handler_timeout=handler_timeout)), scope, receive, send)
    return sent


async def answer_ok(send: Send, chunks: int = 1, pause_s: float = 0.0) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(chunks):
        await anyio.sleep(pause_s)
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.mark.parametrize("stuck", ["awaiting", "in_a_thread"])
def test_a_route_that_does_not_answer_in_time_gets_503(stuck: str) -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if stuck == "awaiting":
            await anyio.sleep(30)
        else:
            await anyio.to_thread.run_sync(time.sleep, 1.0)  # cannot be interrupted; its answer must be dropped
        await answer_ok(send)

    sent = run_guarded(slow, handler_timeout=0.2)
    (at, start), (_, body) = sent
    assert start["status"] == 503 and json.loads(body["body"])["error"]["code"] == "handler_timeout"
    assert 0.2 <= at < 0.8


def test_a_streaming_answer_is_not_cut_by_the_handler_timeout() -> None:
    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await answer_ok(send, chunks=5, pause_s=0.1)

    sent = run_guarded(streaming, handler_timeout=0.2)
    assert sent[0][1]["status"] == 200 and len(sent) == 7 and sent[-1][0] > 0.4


def test_serve_refuses_a_limit_that_is_not_positive(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(RD_ASSETS), "serve", "--store", str(tmp_path), "--max-connections", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "max_connections" in done.stderr
