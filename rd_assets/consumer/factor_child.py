"""The program inside the factor sandbox: confine this process, run ``factor.py`` as RD-Agent does, check its output.

RD-Agent runs ``python factor.py`` in a workspace that holds ``daily_pv.h5`` and reads back ``result.h5``. This
harness does the same in its cwd, after :mod:`rd_assets.consumer.confinement` has applied every layer; then it
checks the output (a DataFrame with one column named like the factor, rows of the input's (datetime, instrument)
index, numbers that are finite or NaN) and writes the values, aligned to the input's rows, as raw little-endian
float64 (:data:`VALUES_FILE`) with a JSON status (:data:`STATUS_FILE`).

``result.h5`` is read here, inside the sandbox, because pandas' HDF5 reader can unpickle object columns: the
parent never parses anything the factor wrote but a fixed-size array of floats and a small JSON document.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback
from typing import Any

from rd_assets.consumer import confinement

DATA_FILE = "daily_pv.h5"
FACTOR_FILE = "factor.py"
RESULT_FILE = "result.h5"
STATUS_FILE = ".rd_assets_status.json"
VALUES_FILE = ".rd_assets_values.f64"
INDEX_NAMES = ("datetime", "instrument")


class FactorOutcome(Exception):
    """How the factor ended when it did not produce valid values: a stable code and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _write_status(status: dict[str, Any]) -> None:
    with open(STATUS_FILE, "w", encoding="utf-8") as fh:
        json.dump(status, fh)


def _confine(config: dict[str, Any]) -> dict[str, Any]:
    """Apply every layer the parent asked for; what was applied is reported (the parent decides if it suffices)."""
    applied: dict[str, Any] = {}
    confinement.apply_limits(confinement.Limits(**config["limits"]))
    if not confinement.only_thread():
        raise FactorOutcome("sandbox_unavailable", "the harness has more than one thread before confinement")
    for layer, apply in (
        ("capabilities_dropped", lambda: confinement.drop_capabilities() is None),
        ("landlock_abi", lambda: confinement.apply_landlock(os.getcwd(), confinement.readable_paths())),
        ("seccomp_denied", confinement.apply_seccomp),
    ):
        try:
            applied[layer] = apply()
        except OSError as exc:  # ConfinementError is one
            if config["require_confinement"]:
                raise FactorOutcome("sandbox_unavailable", f"{layer}: {exc.strerror or exc}") from None
            applied[layer] = None
    return applied


def _run_factor() -> None:
    """``python factor.py`` in this process: a non-zero exit or an exception is the factor's failure."""
    workdir = os.getcwd()
    sys.argv = [FACTOR_FILE]
    try:
        runpy.run_path(FACTOR_FILE, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise FactorOutcome("factor_failed", f"factor.py exited with {exc.code!r}") from None
    except MemoryError:
        raise FactorOutcome("factor_memory_limit", "factor.py ran out of memory (the sandbox's memory limit)") from None
    except BaseException as exc:
        traceback.print_exc()
        raise FactorOutcome("factor_failed", f"{type(exc).__name__}: {exc}"[:2000]) from None
    finally:
        os.chdir(workdir)  # the output is looked for where RD-Agent looks: the workspace, wherever the code went


def _aligned_values(name: str, index: Any) -> tuple[Any, int]:
    """The factor's column as float64 in the input's row order, and how many input rows it left out (NaN)."""
    import numpy as np
    import pandas as pd

    if not os.path.isfile(RESULT_FILE):
        raise FactorOutcome("factor_no_output", f"factor.py wrote no {RESULT_FILE}")
    try:
        result = pd.read_hdf(RESULT_FILE)
    except Exception as exc:
        raise FactorOutcome("factor_output_invalid", f"{RESULT_FILE} is not readable: {exc}"[:2000]) from None
    if not isinstance(result, pd.DataFrame):
        raise FactorOutcome("factor_output_invalid", f"{RESULT_FILE} holds a {type(result).__name__}, not a DataFrame")
    if list(result.columns) != [name]:
        raise FactorOutcome("factor_output_invalid", f"columns {list(result.columns)[:5]!r}, expected [{name!r}]")
    if not isinstance(result.index, pd.MultiIndex) or sorted(result.index.names) != sorted(INDEX_NAMES):
        raise FactorOutcome("factor_output_invalid", f"index {list(result.index.names)!r}, expected {INDEX_NAMES}")
    if list(result.index.names) != list(INDEX_NAMES):
        result = result.reorder_levels(list(INDEX_NAMES))
    if result.index.has_duplicates:
        raise FactorOutcome("factor_output_invalid", "the output has duplicate (datetime, instrument) rows")
    column = result[name]
    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        raise FactorOutcome("factor_output_invalid", f"values of dtype {column.dtype}, expected numbers")
    foreign = result.index.difference(index)
    if len(foreign):
        raise FactorOutcome(
            "factor_output_invalid", f"{len(foreign)} row(s) not in the input, e.g. {tuple(map(str, foreign[0]))}"
        )
    values = column.astype("float64").reindex(index).to_numpy(dtype="<f8")
    if np.isinf(values).any():
        raise FactorOutcome("factor_output_invalid", f"{int(np.isinf(values).sum())} infinite value(s)")
    return values, len(index) - len(result)


def main(config_json: str) -> None:
    config = json.loads(config_json)
    status: dict[str, Any] = {"ok": False}
    try:
        import pandas as pd  # loaded before the limits: the factor imports it too, and the budget comes on top

        index = pd.read_hdf(DATA_FILE, key="data").index
        status["applied"] = _confine(config)
        _run_factor()
        values, missing = _aligned_values(config["name"], index)
        values.tofile(VALUES_FILE)
        status.update(ok=True, rows=len(values), missing_rows=missing)
    except FactorOutcome as outcome:
        status.update(code=outcome.code, message=outcome.message)
    except MemoryError:
        status.update(code="factor_memory_limit", message="out of memory while checking the output")
    _write_status(status)
    sys.stdout.flush()
    os._exit(0)
