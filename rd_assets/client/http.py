"""HTTP access to a Results API (``rd-assets serve``): retries, typed errors, conditional and ranged GETs.

Transient failures (connection refused or reset, timeouts, a body cut short, ``429``/``502``/``503``/``504``) are
retried with exponential backoff and full jitter (tenacity), honouring ``Retry-After``; everything else is a typed error
at once: :class:`ApiRequestError` carries the API's own error code (``task_not_found``, ``unauthorized`` ...),
:class:`ApiUnreachableError` says the server never answered. Nothing here writes files; see
:mod:`rd_assets.client.mirror`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from rd_assets import __version__
from rd_assets.core.errors import ApiRequestError, ApiUnreachableError

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 30.0
_T = TypeVar("_T")


class TransientHttpError(Exception):
    """A status worth retrying (the server is busy or restarting); becomes a typed error when retries run out."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status = response.status_code
        self.error = _api_error(response)
        self.retry_after = _retry_after(response)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers.get("retry-after", "")), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        return None


def _api_error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from the API's error envelope, or what the status says when the body is not one."""
    try:
        body = json.loads(response.read()[:65536])
        error = body["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError, httpx.HTTPError):
        return f"http_{response.status_code}", response.reason_phrase or "error"


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientHttpError | httpx.TransportError)


class RemoteTask(BaseModel):
    """One task as ``GET /tasks`` lists it (tolerant: fields a newer server adds are ignored)."""

    model_config = ConfigDict(extra="ignore")
    task_id: str
    selection_ready: bool
    content_hash: str
    version: str
    generated_at_utc: str
    factor_count: int


class _TaskPage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    total: int
    tasks: list[RemoteTask]


@dataclass
class RetryPolicy:
    attempts: int = 5
    initial_wait: float = 0.2
    max_wait: float = 5.0


@dataclass
class ResultsClient:
    """A client of one Results API; ``requests`` counts every HTTP request sent, retries included."""

    api: str
    token: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_document_bytes: int = 64 * 1024 * 1024
    """Largest JSON answer (manifest, task list) read into memory; files are streamed to disk instead."""
    requests: int = 0
    _http: httpx.Client | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.api = self.api.rstrip("/")
        headers = {"user-agent": f"rd-assets/{__version__}"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        # a plain-http API never does TLS (redirects are not followed): skip loading the CA bundle (~0.15 s)
        tls = httpx.URL(self.api).scheme == "https"
        self._http = httpx.Client(
            base_url=self.api, headers=headers, timeout=self.timeout, follow_redirects=False, verify=tls
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> ResultsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, TransientHttpError) and exc.retry_after is not None:
            return exc.retry_after
        return wait_random_exponential(multiplier=self.retry.initial_wait, max=self.retry.max_wait)(state)

    def retrying(self, attempt: Callable[[], _T], *, what: str) -> _T:
        """Run ``attempt`` until it succeeds or fails for good; transient failures end as typed errors."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except TransientHttpError as exc:
            code, message = exc.error
            raise ApiRequestError(
                f"{what}: HTTP {exc.status} {code}: {message} (after {self.retry.attempts} attempts)",
                path=self.api, status=exc.status, api_code=code,
            ) from None  # fmt: skip
        except httpx.TransportError as exc:
            raise ApiUnreachableError(
                f"{what}: {type(exc).__name__}: {exc} (after {self.retry.attempts} attempts)", path=self.api
            ) from None

    @contextlib.contextmanager
    def stream(self, path: str, *, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
               ok: tuple[int, ...] = (200,)) -> Iterator[httpx.Response]:  # fmt: skip
        """One GET whose response is streamed; a status outside ``ok`` raises (transient ones to be retried)."""
        assert self._http is not None
        self.requests += 1
        with self._http.stream("GET", path, params=params, headers=headers) as response:
            if response.status_code in ok:
                yield response
                return
            if response.status_code in RETRY_STATUSES:
                raise TransientHttpError(response)
            code, message = _api_error(response)
            raise ApiRequestError(
                f"GET {path}: HTTP {response.status_code} {code}: {message}",
                path=self.api, status=response.status_code, api_code=code,
            )  # fmt: skip

    def get_bytes(self, path: str, *, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                  ok: tuple[int, ...] = (200,)) -> tuple[int, httpx.Headers, bytes]:  # fmt: skip
        """(status, headers, body) of a GET, retried on transient failures."""

        def attempt() -> tuple[int, httpx.Headers, bytes]:
            with self.stream(path, params=params, headers=headers, ok=ok) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_document_bytes:
                        raise ApiRequestError(
                            f"GET {path}: answer larger than {self.max_document_bytes} bytes", path=self.api
                        )
                return response.status_code, response.headers, bytes(body)

        return self.retrying(attempt, what=f"GET {path}")

    def list_tasks(self, *, page: int = 1000) -> list[RemoteTask]:
        """Every published task with its readiness and content hash, newest first (all pages)."""
        tasks: list[RemoteTask] = []
        while True:
            _, _, body = self.get_bytes("/tasks", params={"limit": str(page), "offset": str(len(tasks))})
            try:
                listing = _TaskPage.model_validate_json(body)
            except ValidationError as exc:
                raise ApiRequestError(f"GET /tasks: not a task list: {exc.errors()[0]}", path=self.api) from None
            tasks += listing.tasks
            if not listing.tasks or len(tasks) >= listing.total:
                return tasks
