"""Documents of the consumer kit: what ``rd-assets pull``, ``compute-factors`` and ``score`` report as JSON.

They describe work done on a machine that uses bundles (download, factor computation in a sandbox, scoring), not
the bundle itself; the bundle's own documents are in :mod:`rd_assets.core.contracts.bundle_models`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rd_assets.core.contracts.models import Contract, Document, ErrorInfo


class PullResult(Document):
    """What one ``pull`` did: where the bundle is now and how many bytes crossed the network for it."""

    ok: bool
    task_id: str
    api: str
    dest: str
    bundle_path: str | None = Field(None, description="<dest>/<task_id>, the symlink to the current local version")
    version_dir: str | None = None
    content_hash: str | None = None
    selection_ready: bool | None = None
    changed: bool | None = Field(None, description="false: the local copy was already this bundle")
    not_modified: bool = Field(False, description="the server answered 304 to the local manifest's ETag")
    downloaded_files: list[str] = Field(default_factory=list, description="relpaths fetched over HTTP")
    reused_files: list[str] = Field(default_factory=list, description="relpaths whose sha256 a local copy had")
    resumed_files: list[str] = Field(default_factory=list, description="relpaths continued with a Range request")
    downloaded_bytes: int = 0
    requests: int = Field(0, description="HTTP requests made, retries included")
    error: ErrorInfo | None = None


class SandboxFacts(Contract):
    """Which confinement the factor processes ran under (every factor of one run gets the same)."""

    runner: Literal["root", "user_namespace", "none"] = Field(
        description="how the namespaces were made: unshare as root, unshare in a user namespace, or not at all"
    )
    network_namespace: bool = Field(description="each factor ran in a new, empty network namespace")
    pid_namespace: bool = Field(description="each factor and anything it started die together")
    landlock_abi: int | None = Field(None, description="Landlock ABI that confined file access; null: none")
    capabilities_dropped: bool | None = None
    seccomp_denied: list[str] | None = Field(None, description="syscalls refused with EPERM; null: no filter")
    missing: list[str] = Field(default_factory=list, description="layers that could not be applied, and why")
    memory_mb: int
    cpu_seconds: int
    wall_seconds: float
    file_mb: int
    open_files: int


class FactorRun(Contract):
    """One factor's run in the sandbox: its values were kept, or the reason they were not."""

    name: str
    code_relpath: str | None
    ok: bool
    code: str | None = Field(
        None,
        description="factor_failed, factor_timeout, factor_cpu_limit, factor_memory_limit, factor_killed, "
        "factor_crashed, factor_no_output, factor_output_invalid, factor_code_missing, sandbox_unavailable",
    )
    message: str | None = None
    seconds: float = 0.0
    rows: int | None = None
    missing_rows: int | None = Field(None, description="input rows the factor left out (kept as NaN)")
    nan_values: int | None = None
    output_tail: str | None = Field(None, description="the end of what the factor printed (stdout and stderr)")


class FactorComputeReport(Document):
    """What ``rd-assets compute-factors`` did for one bundle and one ``daily_pv.h5``."""

    ok: bool = Field(description="every factor the model needs was computed")
    task_id: str
    content_hash: str
    data: str
    rows: int
    out: str | None = None
    columns: list[str] = Field(description="the factor columns written, in the bundle's dynamic factor order")
    failed: list[str] = []
    sandbox: SandboxFacts | None = None
    factors: list[FactorRun] = []
    error: ErrorInfo | None = None


class NanPolicy(Contract):
    """What the scorer does with a NaN feature: what the executed config's inference processors did."""

    kind: Literal["fill", "keep"]
    fill_value: float | None = None
    source: str = Field(description="the processor (or its absence) in model_meta.json that decides it")
    processors_not_applied: list[str] = Field(
        default_factory=list,
        description="other inference processors of the config (normalisation): the features given must already "
        "be their output, because their fitted statistics are not in the session",
    )


class ScoreRow(Contract):
    datetime: str
    instrument: str
    score: float | None
    rank: int | None = Field(description="1 = highest score of its date; null when the model gave no number")


class ScoreResult(Document):
    """What ``rd-assets score --json`` prints: per-date ranked scores and how the features were taken."""

    task_id: str
    content_hash: str
    model_kind: Literal["lightgbm", "torch"]
    model_input_order: list[str]
    ignored_columns: list[str] = Field(description="columns of the features file the model does not use")
    nan_policy: NanPolicy
    rows: int
    unscored: int = Field(description="rows whose score is NaN (torch with NaN inputs under the keep policy)")
    dates: list[str]
    top_k: int | None = None
    scores: list[ScoreRow]
