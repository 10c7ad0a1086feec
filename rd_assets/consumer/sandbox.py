"""Run one factor file in a sandbox and get back its values, or the reason there are none.

Each factor is LLM-written code, so each gets its own process tree, made like this:

* ``unshare --net --pid --fork --kill-child`` (as root; otherwise the same inside a new user namespace): an empty
  network namespace (no interface but a down loopback) and a PID namespace whose processes all die with the
  factor's, so nothing it starts outlives the wall-clock limit;
* a fresh interpreter (``python -I -B``) with a fixed environment (no variable of ours: no token, no key, one
  thread per numeric library), stdin closed, its cwd a new temporary directory holding a private copy of
  ``daily_pv.h5`` and the code as ``factor.py``;
* inside it, :mod:`rd_assets.consumer.factor_child` applies the limits, Landlock, the capability drop and the seccomp
  filter of :mod:`rd_assets.consumer.confinement` before the factor's first line runs;
* the parent enforces the wall-clock limit (SIGKILL to the whole tree) and trusts nothing but a float64 array of
  exactly one value per input row and a small JSON status, both size-checked before they are read.

:func:`probe` checks once per run what this machine allows; without a network namespace or Landlock nothing runs
unless the caller accepts a weaker sandbox explicitly (the report then says what was missing).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from rd_assets.consumer import confinement
from rd_assets.consumer.factor_child import DATA_FILE, FACTOR_FILE, STATUS_FILE, VALUES_FILE
from rd_assets.consumer.sandbox_limits import SandboxLimits
from rd_assets.core.contracts.consumer_models import FactorRun, SandboxFacts
from rd_assets.core.errors import SandboxUnavailableError

ROOT = str(Path(__file__).resolve().parents[2])
BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from rd_assets.consumer.factor_child import main; "
    "del sys.path[0]; main(sys.argv[2])"
)
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_MAX_THREADS",
               "NUMEXPR_NUM_THREADS", "BLOSC_NTHREADS", "VECLIB_MAXIMUM_THREADS")  # fmt: skip
MAX_STATUS_BYTES = 64 * 1024
OUTPUT_TAIL_BYTES = 4000
UNSHARE = ("--net", "--pid", "--fork", "--kill-child")


@dataclass(frozen=True)
class Sandbox:
    """How factor processes are started on this machine (from :func:`probe`)."""

    prefix: tuple[str, ...]
    facts: SandboxFacts
    require_confinement: bool


class _Status(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ok: bool
    code: str | None = None
    message: str | None = None
    rows: int | None = None
    missing_rows: int | None = None
    applied: dict[str, object] | None = None


def _child_env(cwd: Path) -> dict[str, str]:
    """The child's whole environment; no library may start a thread before confinement (pyarrow's jemalloc would)."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": str(cwd), "TMPDIR": str(cwd)}
    env["JE_ARROW_MALLOC_CONF"] = "background_thread:false"
    return env | dict.fromkeys(_ONE_THREAD, "1")


def _namespace_prefix() -> tuple[tuple[str, ...] | None, str, str | None]:
    """The unshare command line for this user, its runner name, and why there is none."""
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if unshare is None:
        return None, "none", "util-linux `unshare` is not installed"
    if os.geteuid() == 0:
        return (unshare, *UNSHARE), "root", None
    return (unshare, "--user", "--map-root-user", *UNSHARE), "user_namespace", None


def _netns_of_child(prefix: tuple[str, ...]) -> tuple[str | None, str | None]:
    """The network namespace a process started through ``prefix`` lives in, or why none started."""
    try:
        done = subprocess.run(
            [*prefix, "/bin/readlink", "/proc/self/ns/net"],
            capture_output=True, timeout=20, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"unshare did not run: {exc}"
    if done.returncode != 0:
        return None, f"unshare refused: {done.stderr.decode(errors='replace').strip()[:300]}"
    return done.stdout.decode().strip(), None


def probe(limits: SandboxLimits, *, require_confinement: bool = True) -> Sandbox:
    """What this machine allows; :class:`SandboxUnavailableError` when a layer is missing and it is required."""
    missing: list[str] = []
    prefix, runner, why = _namespace_prefix()
    namespaces = False
    if prefix is not None:
        child_ns, why = _netns_of_child(prefix)
        namespaces = child_ns is not None and child_ns != os.readlink("/proc/self/ns/net")
        if child_ns is not None and not namespaces:
            why = "the child shares this process's network namespace"
    if not namespaces:
        missing.append(f"network and PID namespaces: {why}")
        prefix, runner = (), "none"
    abi = confinement.landlock_abi()
    if abi < 1:
        missing.append("Landlock: not available in this kernel (Linux >= 5.13 with Landlock enabled)")
    facts = SandboxFacts(
        runner=runner, network_namespace=namespaces, pid_namespace=namespaces, landlock_abi=abi or None,
        missing=missing, **{k: v for k, v in asdict(limits).items()},
    )  # fmt: skip
    if missing and require_confinement:
        raise SandboxUnavailableError("; ".join(missing))
    return Sandbox(prefix=tuple(prefix or ()), facts=facts, require_confinement=require_confinement)


def _tail(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - OUTPUT_TAIL_BYTES))
            data = fh.read()
    except OSError:
        return None
    return data.decode("utf-8", errors="replace") or None


def _read_status(cwd: Path) -> _Status | None:
    path = cwd / STATUS_FILE
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_STATUS_BYTES:
            return None
        return _Status.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def _read_values(cwd: Path, rows: int) -> np.ndarray | None:
    """Exactly ``rows`` float64 values, or None (wrong size, not a regular file)."""
    path = cwd / VALUES_FILE
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != rows * 8:
            return None
        return np.fromfile(path, dtype="<f8", count=rows)
    except OSError:
        return None


def _cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _death(returncode: int, cpu_used: float, limits: SandboxLimits) -> tuple[str, str]:
    """Why a factor left no status. The CPU limit kills with SIGKILL, which ``unshare`` reports as exit 1 (it cannot
    re-raise SIGKILL), so the CPU time the tree used is the evidence, not the exit status."""
    if cpu_used >= limits.cpu_seconds:
        return "factor_cpu_limit", f"used {cpu_used:.1f} s of CPU: killed at the {limits.cpu_seconds} s CPU limit"
    if returncode < 0:
        return "factor_crashed", f"died of signal {signal.Signals(-returncode).name}"
    return "factor_crashed", f"ended (exit status {returncode}) without a status: killed or exited on its own"


@dataclass(frozen=True)
class FactorValues:
    run: FactorRun
    values: np.ndarray | None
    applied: dict[str, object] | None = None
    """The confinement layers the child reported it applied (landlock_abi, capabilities_dropped, seccomp_denied)."""


def run_factor(
    sandbox: Sandbox, *, name: str, code: bytes, code_relpath: str, data: Path, rows: int, limits: SandboxLimits
) -> FactorValues:
    """Run ``code`` as ``factor.py`` next to a copy of ``data``; its values (one per input row) or why not."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rd-assets-factor-") as tmp:
        cwd = Path(tmp) / "cwd"
        cwd.mkdir(mode=0o700)
        shutil.copyfile(data, cwd / DATA_FILE)
        (cwd / FACTOR_FILE).write_bytes(code)
        log = Path(tmp) / "output.log"
        config = {
            "name": name,
            "limits": {k: getattr(limits, k) for k in ("memory_mb", "cpu_seconds", "file_mb", "open_files")},
            "require_confinement": sandbox.require_confinement,
        }
        cpu_before = _cpu_seconds_of_children()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*sandbox.prefix, sys.executable, "-I", "-B", "-c", BOOT, ROOT, json.dumps(config)],
                cwd=cwd, env=_child_env(cwd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        cpu_used = _cpu_seconds_of_children() - cpu_before
        seconds = round(time.monotonic() - started, 3)
        base = {"name": name, "code_relpath": code_relpath, "seconds": seconds, "output_tail": _tail(log)}
        if timed_out:
            why = f"no result within the {limits.wall_seconds:g} s wall-clock limit: killed with everything it started"
            return FactorValues(FactorRun(**base, ok=False, code="factor_timeout", message=why), None)
        status = _read_status(cwd)
        if status is None:
            code_, message = _death(proc.returncode, cpu_used, limits)
            return FactorValues(FactorRun(**base, ok=False, code=code_, message=message), None)
        if not status.ok:
            run = FactorRun(**base, ok=False, code=status.code, message=status.message)
            return FactorValues(run, None, status.applied)
        values = _read_values(cwd, rows)
        if values is None or np.isinf(values).any():
            why = f"the values are not {rows} finite-or-NaN float64 numbers"
            run = FactorRun(**base, ok=False, code="factor_output_invalid", message=why)
            return FactorValues(run, None, status.applied)
        run = FactorRun(
            **base, ok=True, rows=rows, missing_rows=status.missing_rows, nan_values=int(np.isnan(values).sum())
        )
        return FactorValues(run, values, status.applied)
