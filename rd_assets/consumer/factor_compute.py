"""Compute a bundle's factors from a ``daily_pv.h5`` the way RD-Agent does, each in its own sandbox.

The factors computed are the bundle's ``dynamic_factors`` (the columns the model takes from factor code), each from
its published ``factors/<name>.py``. One that fails, hangs or writes garbage is reported with its reason and left
out of the output; the others still run. The output has the input's (datetime, instrument) rows in the input's order
and one column per computed factor, in ``dynamic_factors`` order.

``daily_pv.h5`` is the caller's own data (qlib's ``$open, $close, $high, $low, $volume`` ... under the key ``data``,
rows indexed by (datetime, instrument)). It is read here with pandas, which can unpickle object columns of an
HDF5 file: give it only files you made.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rd_assets.consumer.bundle import Bundle
from rd_assets.consumer.factor_child import INDEX_NAMES
from rd_assets.consumer.sandbox import probe, run_factor
from rd_assets.consumer.sandbox_limits import SandboxLimits
from rd_assets.core.contracts.consumer_models import FactorComputeReport, FactorRun, SandboxFacts
from rd_assets.core.errors import FactorDataError

HDF_KEY = "data"


def read_daily_pv(path: Path) -> pd.DataFrame:
    """The input frame, refused unless it is what RD-Agent's factor code reads (key ``data``, unique rows)."""
    if not path.is_file():
        raise FactorDataError("no such file", path=str(path))
    try:
        frame = pd.read_hdf(path, key=HDF_KEY)
    except (KeyError, OSError, ValueError, TypeError, ImportError) as exc:
        why = f"not an HDF5 file with a frame under the key {HDF_KEY!r}: {exc}"
        raise FactorDataError(why, path=str(path)) from None
    if not isinstance(frame, pd.DataFrame):
        raise FactorDataError(f"the key {HDF_KEY!r} holds a {type(frame).__name__}, not a DataFrame", path=str(path))
    if not isinstance(frame.index, pd.MultiIndex) or list(frame.index.names) != list(INDEX_NAMES):
        raise FactorDataError(f"rows must be indexed by {INDEX_NAMES}, not {list(frame.index.names)}", path=str(path))
    if frame.index.has_duplicates:
        raise FactorDataError("duplicate (datetime, instrument) rows", path=str(path))
    if frame.empty:
        raise FactorDataError("no rows", path=str(path))
    return frame


@dataclass(frozen=True)
class ComputedFactors:
    frame: pd.DataFrame
    report: FactorComputeReport


def _facts_with(facts: SandboxFacts, applied: dict[str, object] | None) -> SandboxFacts:
    """The probe's facts completed by what a factor process reported it applied (Landlock, capabilities, seccomp)."""
    if not applied:
        return facts
    return facts.model_copy(
        update={
            "landlock_abi": applied.get("landlock_abi"),
            "capabilities_dropped": applied.get("capabilities_dropped"),
            "seccomp_denied": applied.get("seccomp_denied"),
        }
    )


def write_parquet(frame: pd.DataFrame, out: Path) -> None:
    """Write next to ``out`` and rename, so a reader never sees half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compute_factors(
    bundle: Bundle,
    data: Path,
    *,
    out: Path | None = None,
    limits: SandboxLimits | None = None,
    require_confinement: bool = True,
) -> ComputedFactors:
    """Run every dynamic factor of ``bundle`` on ``data``; ``out`` receives the parquet of the computed ones."""
    limits = limits or SandboxLimits()
    frame = read_daily_pv(data)
    sandbox = probe(limits, require_confinement=require_confinement)
    facts = sandbox.facts
    runs: list[FactorRun] = []
    columns: dict[str, object] = {}
    for name in bundle.dynamic_factors:
        code = bundle.factor_code(name)
        if code is None:
            why = "the bundle publishes no code for it (see its factor_code_incomplete)"
            runs.append(FactorRun(name=name, code_relpath=None, ok=False, code="factor_code_missing", message=why))
            continue
        relpath, source = code
        result = run_factor(
            sandbox, name=name, code=source, code_relpath=relpath, data=data, rows=len(frame), limits=limits
        )
        facts = _facts_with(facts, result.applied) if facts.capabilities_dropped is None else facts
        runs.append(result.run)
        if result.values is not None:
            columns[name] = result.values
    computed = pd.DataFrame(columns, index=frame.index, columns=list(columns))
    if out is not None:
        write_parquet(computed, out)
    failed = [run.name for run in runs if not run.ok]
    report = FactorComputeReport(
        ok=not failed, task_id=bundle.task_id, content_hash=bundle.manifest.content_hash, data=str(data),
        rows=len(frame), out=str(out) if out is not None else None, columns=list(columns), failed=failed,
        sandbox=facts, factors=runs,
    )  # fmt: skip
    return ComputedFactors(computed, report)
