"""Everything that parses untrusted bytes runs in a separate reader process with hard limits.

A function decorated with :func:`isolated` (unpickling a session, introspecting a weight, parsing YAML or a
parquet footer, loading ``model.txt`` with LightGBM) is, when called, sent to a worker process and its typed
result validated back here. The worker:

* is a fresh interpreter (``python -I -B``, not a fork) started with a fixed, tiny environment: no
  ``RD_ASSETS_SIGNING_KEY``, no API token, no ``PYTHON*`` variables; it inherits no descriptor but its channel;
* never opens a path under a log dir: session bytes arrive as descriptors the parent opened (sealed,
  verified copies when a key checks them);
* runs under ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (per call), ``RLIMIT_NOFILE``, ``RLIMIT_FSIZE=0`` (it cannot
  write a byte to any file) and ``RLIMIT_CORE=0``; the parent adds a wall-clock timeout per call.

A signal, a limit or a timeout becomes a typed ``reader_crashed`` / ``reader_limit_exceeded`` error naming the
file; the parent stays alive and starts a fresh worker for the next call, so the rest of the task still
resolves. Results cross back as JSON validated by the function's return annotation (pydantic), never as a pickle.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import gc
import importlib
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, get_type_hints

from pydantic import ConfigDict, TypeAdapter

from rd_assets.core.errors import (
    RdAssetsError,
    ReaderCrashedError,
    ReaderLimitExceededError,
    error_classes,
    rebuild_error,
)
from rd_assets.core.session.file_format import FileFormat, SessionBody, SignatureStatus

P = ParamSpec("P")
R = TypeVar("R")

ENV_MEMORY_MB = "RD_ASSETS_READER_MEMORY_MB"
ENV_CPU_S = "RD_ASSETS_READER_CPU_SECONDS"
ENV_TIMEOUT_S = "RD_ASSETS_READER_TIMEOUT_SECONDS"
_WORKER_ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
"""The worker's whole environment: nothing of the parent's (secrets live there) is passed on."""
_HEADER = struct.Struct("<Q")
_MAX_FDS = 8
_ISOLATED_ATTR = "__rd_isolated__"
MAX_MESSAGE_CHARS = 4096
"""An error message from the reader is cut here: a 400 MB global name must not become a 400 MB report."""


@dataclass(frozen=True)
class ReaderLimits:
    """Hard limits of one reader process; defaults fit genuine sessions with a wide margin."""

    memory_mb: int = 3072
    """Address space the worker may add on top of its interpreter and libraries (``RLIMIT_AS``)."""
    cpu_seconds: int = 120
    """CPU time per call (``RLIMIT_CPU``, moved forward before each call)."""
    timeout_seconds: float = 300.0
    """Wall time per call, enforced by the parent (a worker blocked on anything is killed)."""
    open_files: int = 64

    @classmethod
    def from_env(cls) -> ReaderLimits:
        def number(name: str, default: float) -> float:
            raw = os.environ.get(name, "").strip()
            try:
                return float(raw) if raw else default
            except ValueError:
                return default

        base = cls()
        return cls(
            memory_mb=int(number(ENV_MEMORY_MB, base.memory_mb)),
            cpu_seconds=int(number(ENV_CPU_S, base.cpu_seconds)),
            timeout_seconds=number(ENV_TIMEOUT_S, base.timeout_seconds),
        )


_in_process: contextvars.ContextVar[bool] = contextvars.ContextVar("rd_assets_in_process", default=False)


@contextlib.contextmanager
def in_process() -> Iterator[None]:
    """Run isolated functions directly in this process (the worker itself; the benchmark's reference)."""
    token = _in_process.set(True)
    try:
        yield
    finally:
        _in_process.reset(token)


BYTES_AS_BASE64 = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
"""``__pydantic_config__`` of result dataclasses that carry bytes (weights) across the channel."""


class _Codec:
    """A result as JSON: validated by the function's return annotation, or passed as is when that is ``Any``
    (parsed YAML: plain JSON data, where ``.inf`` must stay infinite rather than become null)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        hint = get_type_hints(fn)["return"]
        self.adapter: TypeAdapter[Any] | None = None if hint is Any else TypeAdapter(hint)

    def encode(self, result: Any) -> bytes:
        return json.dumps(result).encode() if self.adapter is None else self.adapter.dump_json(result)

    def decode(self, raw: bytes) -> Any:
        return json.loads(raw) if self.adapter is None else self.adapter.validate_json(raw)


@functools.cache
def _codec(fn: Callable[..., Any]) -> _Codec:
    return _Codec(fn)


def isolated(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` in the reader process; it must take sessions/bytes/JSON values and raise only typed errors."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        if _in_process.get():
            return fn(*args, **kwargs)
        if kwargs:
            raise TypeError(f"{fn.__qualname__}: isolated calls take positional arguments only")
        return shared_reader().run(call, *args)

    setattr(call, _ISOLATED_ATTR, fn)
    return call


# ------------------------------------------------------------------------------------------------ channel


def _send(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    """Length-prefixed payload; descriptors travel with the first bytes (SCM_RIGHTS)."""
    data = _HEADER.pack(len(payload)) + payload
    first = data[:65536]
    socket.send_fds(sock, [first], fds) if fds else sock.sendall(first)
    if len(data) > len(first):
        sock.sendall(memoryview(data)[len(first) :])


class _ChannelError(ValueError):
    """The other side broke the channel's rules (size, descriptors, framing)."""


def _recv_exact(sock: socket.socket, n: int, into: bytearray, deadline: float | None) -> None:
    while len(into) < n:
        _arm(sock, deadline)
        chunk = sock.recv(min(n - len(into), 1 << 20))
        if not chunk:
            raise EOFError
        into += chunk


def _arm(sock: socket.socket, deadline: float | None) -> None:
    """One deadline per call: each receive may wait only for what is left of it (a trickle cannot extend it)."""
    if deadline is None:
        sock.settimeout(None)
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)


def _recv(
    sock: socket.socket, *, deadline: float | None = None, max_bytes: int | None = None, accept_fds: bool = True
) -> tuple[bytes, list[int]]:
    """One message and the descriptors that came with it; ``EOFError`` when the other side is gone.

    ``max_bytes`` is checked against the announced length before anything is allocated; with
    ``accept_fds=False`` descriptors that arrive anyway are closed and the message refused.
    """
    _arm(sock, deadline)
    first, fds, _flags, _addr = socket.recv_fds(sock, 65536, _MAX_FDS)
    if fds and not accept_fds:
        for fd in fds:
            os.close(fd)
        raise _ChannelError("descriptors attached to an answer")
    if not first:
        raise EOFError
    buf = bytearray(first)
    _recv_exact(sock, _HEADER.size, buf, deadline)
    (length,) = _HEADER.unpack_from(buf)
    if max_bytes is not None and length > max_bytes:
        raise _ChannelError(f"an answer of {length} bytes, over the {max_bytes}-byte bound for this input")
    _recv_exact(sock, _HEADER.size + length, buf, deadline)
    if len(buf) != _HEADER.size + length:
        raise _ChannelError("bytes past the end of the answer")
    return bytes(buf[_HEADER.size :]), list(fds)


def _bytes_fd(data: bytes) -> int:
    fd = os.memfd_create("rd-assets-bytes", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _marshal(args: list[Any]) -> tuple[list[Any], list[int], list[int]]:
    """JSON arguments and the descriptors to pass (plus those made here, to close after sending)."""
    out: list[Any] = []
    fds: list[int] = []
    made: list[int] = []
    for arg in args:
        if isinstance(arg, SessionBody):
            fds.append(arg.fd)
            out.append(
                {
                    "body": len(fds) - 1,
                    "size": arg.size,
                    "offset": arg.offset,
                    "shown": arg.shown,
                    "format": arg.file_format.value,
                    "signature": arg.signature.value,
                }
            )
        elif isinstance(arg, bytes | bytearray):
            made.append(_bytes_fd(bytes(arg)))
            fds.append(made[-1])
            out.append({"bytes": len(fds) - 1, "size": len(arg)})
        else:
            out.append({"value": arg})
    return out, fds, made


def _unmarshal(args: list[dict[str, Any]], fds: list[int]) -> list[Any]:
    out: list[Any] = []
    for arg in args:
        if "body" in arg:
            out.append(
                SessionBody(
                    fds[arg["body"]],
                    arg["size"],
                    arg["offset"],
                    FileFormat(arg["format"]),
                    SignatureStatus(arg["signature"]),
                    arg["shown"],
                )
            )
        elif "bytes" in arg:
            out.append(os.pread(fds[arg["bytes"]], arg["size"], 0) if arg["size"] else b"")
        else:
            out.append(arg["value"])
    return out


# ------------------------------------------------------------------------------------------------ parent


_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from rd_assets.core.isolation import worker_main; worker_main(int(sys.argv[2]), sys.argv[3])"
)


class IsolatedReader:
    """One worker process, started on first use and again after it died; calls are serialised by a lock."""

    boot = _BOOT
    """The worker's program (``python -c``); tests put a misbehaving one here to prove the parent holds."""

    def __init__(self, limits: ReaderLimits | None = None) -> None:
        self.limits = limits or ReaderLimits.from_env()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._requests = 0
        self.started = 0

    def _start(self) -> tuple[subprocess.Popen[bytes], socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        root = str(Path(__file__).resolve().parents[2])
        limits = json.dumps(self.limits.__dict__)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "-c", self.boot, root, str(theirs.fileno()), limits],
                pass_fds=[theirs.fileno()],
                env=_WORKER_ENV,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.started += 1
        return proc, ours

    def prestart(self) -> None:
        """Start the worker unless one is running (and never in the in-process mode)."""
        if _in_process.get():
            return
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self.close()
                self._proc, self._sock = self._start()

    def close(self) -> None:
        """Stop the worker (by its PID) and close the channel."""
        proc, sock, self._proc, self._sock = self._proc, self._sock, None, None
        if sock is not None:
            sock.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def run(self, isolated_fn: Callable[..., R], *args: Any, path: str | None = None) -> R:
        """Run an :func:`isolated` function here; its typed result, or its typed error (``path`` names the input)."""
        fn = getattr(isolated_fn, _ISOLATED_ATTR)
        result = self.call(f"{fn.__module__}:{fn.__qualname__}", list(args), path=path)
        try:
            return _codec(fn).decode(result)
        except ValueError as exc:  # pydantic's ValidationError is one: the worker answered something else
            self._retire()
            why = f"the reader's answer is not a valid {fn.__qualname__} result ({str(exc)[:300]})"
            raise ReaderCrashedError(why, path=path) from None

    def _retire(self) -> None:
        with self._lock:
            self.close()

    def call(self, name: str, args: list[Any], *, path: str | None = None) -> bytes:
        """Run the isolated function ``name`` on ``args``; returns its JSON result or raises its typed error.

        An answer is one status line (``{"ok": ..., "id": ...}``, or the typed error) and the result's JSON. Any
        surprise (wrong id, wrong shape, too big, descriptors, an interruption) retires the worker: a channel in
        an unknown state is never asked again.
        """
        shown = path or next((a.shown for a in args if isinstance(a, SessionBody)), None)
        self.prestart()
        with self._lock:
            proc, sock = self._proc, self._sock
            if proc is None or sock is None:  # closed by another thread in between: start it again
                self._proc, self._sock = proc, sock = self._start()
            self._requests += 1
            request_id = self._requests
            payload, fds, made = _marshal(args)
            deadline = time.monotonic() + self.limits.timeout_seconds
            try:
                _send(sock, json.dumps({"op": name, "id": request_id, "args": payload}).encode(), fds)
                raw, _ = _recv(sock, deadline=deadline, max_bytes=_answer_bound(args), accept_fds=False)
                status, _, result = raw.partition(b"\n")
                message = _status(json.loads(status), request_id)
                if message.get("retire"):  # the worker exits after this answer: never send it another request
                    self.close()
            except TimeoutError:
                self.close()
                raise ReaderLimitExceededError(
                    f"the reader took longer than {self.limits.timeout_seconds:g} s ({ENV_TIMEOUT_S}); stopped",
                    path=shown,
                ) from None
            except (EOFError, OSError):
                returncode = _reap(proc)
                self.close()
                raise _death(returncode, shown) from None
            except ValueError as exc:  # not JSON, wrong shape or id, too big: not asked again
                self.close()
                raise ReaderCrashedError(f"the reader broke the channel: {str(exc)[:300]}", path=shown) from None
            except BaseException:  # interrupted mid-call: its answer may still be on the way
                self.close()
                raise
            finally:
                for fd in made:
                    os.close(fd)
        if message["ok"] is True:
            return result
        raise _rebuild(message["error"], shown)


def _answer_bound(args: list[Any]) -> int:
    """The most an honest answer can take: a bounded JSON part, plus the inputs again, escaped or in base64."""
    inputs = 0
    for arg in args:
        if isinstance(arg, SessionBody):
            inputs += arg.size
        elif isinstance(arg, bytes | bytearray | str):
            inputs += len(arg)
    return (64 << 20) + 8 * inputs


def _status(message: Any, request_id: int) -> dict[str, Any]:
    """The answer's status line, checked: the right request, ``ok`` a bool, an error made of strings."""
    if not isinstance(message, dict) or message.get("id") != request_id or not isinstance(message.get("ok"), bool):
        raise _ChannelError("a status line for another request, or of the wrong shape")
    error = message.get("error")
    if not message["ok"] and not (
        isinstance(error, dict)
        and all(isinstance(error.get(k), str) for k in ("code", "message"))
        and isinstance(error.get("path"), str | None)
    ):
        raise _ChannelError("an error that is not {code, message, path} text")
    return message


def _reap(proc: subprocess.Popen[bytes]) -> int:
    """The worker's exit status; a worker that hung up but lives on is killed first."""
    try:
        return proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _death(returncode: int, shown: str | None) -> RdAssetsError:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:  # a real-time signal has no name
            name = f"signal {-returncode}"
        if -returncode in (signal.SIGXCPU, signal.SIGXFSZ):
            return ReaderLimitExceededError(f"the reader hit a hard limit ({name})", path=shown)
        return ReaderCrashedError(f"the reader process died of {name} on this input", path=shown)
    return ReaderCrashedError(f"the reader process exited ({returncode}) on this input", path=shown)


def _rebuild(error: dict[str, Any], shown: str | None) -> RdAssetsError:
    """The worker's typed error as its own class here (an unknown code stays visible as a crashed read)."""
    code, message, path = error["code"], error["message"][:MAX_MESSAGE_CHARS], error.get("path") or shown
    if code not in error_classes():
        return ReaderCrashedError(f"{code}: {message}", path=path)
    return rebuild_error(code, message, path)


_shared: tuple[int, IsolatedReader] | None = None
_shared_lock = threading.Lock()


def shared_reader() -> IsolatedReader:
    """This process's reader (a forked child gets its own: a worker channel is never shared across PIDs)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared[0] != os.getpid():
            _shared = (os.getpid(), IsolatedReader())
        return _shared[1]


def _close_shared() -> None:
    if _shared is not None and _shared[0] == os.getpid():
        _shared[1].close()


atexit.register(_close_shared)


# ------------------------------------------------------------------------------------------------ worker


def _vm_size() -> int:
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _apply_limits(limits: ReaderLimits) -> None:
    """Cap the worker once its libraries are loaded: what it may add, not what the interpreter already uses."""
    budget = _vm_size() + (limits.memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _no_new_privileges()


_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_DUMPABLE = 4


def _no_new_privileges() -> None:
    """Linux ``prctl``: no exec can ever gain privileges (setuid, file capabilities), and other processes of the
    same user cannot ptrace or read the worker's memory. Defence in depth for a worker that got code to run."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for option in (_PR_SET_NO_NEW_PRIVS, _PR_SET_DUMPABLE):
        value = 1 if option == _PR_SET_NO_NEW_PRIVS else 0
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option}) refused")


def _cpu_budget(seconds: int) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(used.ru_utime + used.ru_stime) + 1
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = spent + seconds
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _resolve(name: str) -> Callable[..., Any]:
    module, _, qualname = name.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    fn = getattr(target, _ISOLATED_ATTR, None)
    if fn is None:
        raise ReaderCrashedError(f"{name} is not an isolated function")
    return fn


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def _answer(raw: bytes, fds: list[int], limits: ReaderLimits) -> tuple[dict[str, Any], bytes, bool]:
    """The status and result JSON of one request, and whether the worker may serve another one."""
    try:
        request = json.loads(raw)
        fn = _resolve(request["op"])
        args = _unmarshal(request["args"], fds)
        _cpu_budget(limits.cpu_seconds)
        return {"ok": True}, _codec(fn).encode(fn(*args)), True
    except RdAssetsError as exc:
        return {"ok": False, "error": exc.as_dict()}, b"", True
    except MemoryError:  # the address-space limit: this heap may be fragmented beyond use, start afresh
        why = f"the reader ran out of its {limits.memory_mb} MiB ({ENV_MEMORY_MB})"
        return _failure(ReaderLimitExceededError.code, why), b"", False
    except RecursionError:
        return _failure(ReaderLimitExceededError.code, "the input nests too deeply"), b"", True
    except Exception as exc:  # a bug or an input nobody foresaw: fail closed, typed, with the cause
        return _failure(ReaderCrashedError.code, f"unexpected {type(exc).__name__}: {exc}"), b"", True
    finally:
        for fd in fds:
            os.close(fd)


def _rss() -> int:
    """Resident memory now (``ru_maxrss`` is the peak, which never goes down)."""
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _request_id(raw: bytes) -> int | None:
    try:
        value = json.loads(raw).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _serve_one(sock: socket.socket, limits: ReaderLimits) -> bool:
    """Answer one request; ``False`` when the worker should exit (channel closed, or memory exhausted).

    The cyclic GC stays off while answering (a collection would walk the whole snapshot being built); cyclic
    garbage of discarded snapshots is collected between requests once the heap has grown past half the budget.
    """
    try:
        raw, fds = _recv(sock)
    except EOFError:
        return False
    status, result, keep_going = _answer(raw, fds, limits)
    status["id"] = _request_id(raw)
    if not keep_going:
        status["retire"] = True
    if "error" in status:
        status["error"]["message"] = status["error"]["message"][:MAX_MESSAGE_CHARS]
    _send(sock, json.dumps(status).encode() + b"\n" + result, [])
    if _rss() > (limits.memory_mb << 19):
        gc.collect()
    return keep_going


_PRELOADED = ("numpy", "rd_assets.core.session.reading")
"""What reading a session needs, loaded before the first request; the other parsers (pyarrow for footers,
LightGBM for ``verify``) load on first use, inside the address-space limit, which leaves them ample room."""


def worker_main(fd: int, limits_json: str) -> None:
    """The reader process: preload the parsers, apply the limits, answer requests until the channel closes."""
    for module in _PRELOADED:  # loaded before the address-space limit is set, and before the first request
        importlib.import_module(module)

    limits = ReaderLimits(**json.loads(limits_json))
    sock = socket.socket(fileno=fd)
    _apply_limits(limits)
    _in_process.set(True)
    gc.disable()
    while _serve_one(sock, limits):
        pass
