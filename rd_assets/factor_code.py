"""Factor code files of the bundle and the consumer keys that point at them.

Each SOTA factor's ``factor.py`` text becomes ``factors/<safe name>.py``; the anchor's own sub_task-0 code is
also ``factor_entry.py``. Consumers address code by file_dict-style keys (``factor.py``,
``based_factor_{i}/factor.py``), kept in :class:`FactorCodeIndex`. An ``ast`` parse (never an import or exec)
checks that each file defines ``calculate_<name>`` or a def/class ``<name>``; every factor without such code
is listed in ``incomplete`` with the reason.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from rd_assets.artifact_models import BasedFactorEntry, FactorCodeFile, FactorCodeIndex
from rd_assets.models import FactorRecord, SotaFactorExperiment

FACTOR_ENTRY = "factor_entry.py"
ENTRY_KEY = "factor.py"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class FactorCodeSet:
    """The index (JSON-able) and the code bytes by bundle relpath."""

    index: FactorCodeIndex
    files: dict[str, bytes]


def safe_file_stem(name: str) -> str:
    """``[A-Za-z0-9_.-]`` only, no leading dot (no hidden files, never ``.``/``..``)."""
    stem = _UNSAFE.sub("_", name)
    return "_" + stem[1:] if stem.startswith(".") else stem or "_"


def factor_relpaths(names: list[str]) -> dict[str, str]:
    """``factors/<safe name>.py`` per name; clashes (also ones differing only in case) get ``__2``, ``__3``..."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for name in names:
        stem = safe_file_stem(name)
        candidate, n = stem, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{stem}__{n}"
        taken.add(candidate.lower())
        out[name] = f"factors/{candidate}.py"
    return out


def code_problem(name: str, code: str | None, missing_reason: str | None) -> str | None:
    """Why ``code`` does not provide factor ``name`` (``None`` when it does)."""
    if code is None:
        return missing_reason or "no code"
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return f"syntax error at line {exc.lineno}: {exc.msg}"
    defined = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    if f"calculate_{name}" in defined or name in defined:
        return None
    return f"defines neither calculate_{name} nor a def/class {name} at module level"


def _file_entry(record: FactorRecord, relpath: str) -> FactorCodeFile:
    problem = code_problem(record.name, record.code, record.code_missing_reason)
    return FactorCodeFile(
        name=record.name,
        relpath=relpath if record.code is not None else None,
        file_dict_key=record.file_dict_key,
        sha256=record.code_sha256,
        defines_function=problem is None,
        missing_reason=problem,
    )


def _based_entries(factors: list[FactorRecord], published: set[str]) -> list[BasedFactorEntry]:
    """Per based experiment, its published keys in sub_task order; the first one is its entry key."""
    keys: dict[int, list[str]] = {}
    for record in sorted(factors, key=lambda r: (r.based_index or 0, r.sub_task_index)):
        if record.based_index is not None and record.file_dict_key in published:
            keys.setdefault(record.based_index, []).append(record.file_dict_key)
    return [
        BasedFactorEntry(based_index=i, resolved_factor_entry_key=ks[0], factor_file_dict_keys=ks)
        for i, ks in sorted(keys.items())
    ]


def build_factor_code(anchor: SotaFactorExperiment) -> FactorCodeSet:
    """Code files for every SOTA factor, ``factor_entry.py`` and the consumer key index."""
    relpaths = factor_relpaths([f.name for f in anchor.sota_factors])
    entries = [_file_entry(f, relpaths[f.name]) for f in anchor.sota_factors]
    files = {relpaths[f.name]: f.code.encode("utf-8") for f in anchor.sota_factors if f.code is not None}
    incomplete = [f"{e.name}: {e.missing_reason}" for e in entries if not e.defines_function]

    entry = next((f for f in anchor.sota_factors if f.based_index is None and f.sub_task_index == 0), None)
    if entry is not None and entry.code is not None:
        files[FACTOR_ENTRY] = entry.code.encode("utf-8")
        entry_key: str | None = ENTRY_KEY
    else:
        entry_key = None
        why = (
            entry.code_missing_reason if entry is not None else "the anchor's sub_task 0 is not among the SOTA factors"
        )
        incomplete.append(f"{FACTOR_ENTRY}: {why}")

    published = {f.file_dict_key for f in anchor.sota_factors if f.code is not None}
    own_keys = [
        f.file_dict_key
        for f in sorted(anchor.sota_factors, key=lambda r: r.sub_task_index)
        if f.based_index is None and f.file_dict_key in published
    ]
    index = FactorCodeIndex(
        files=entries,
        resolved_factor_entry_key=entry_key,
        factor_file_dict_keys=own_keys,
        based_factor_entries=_based_entries(anchor.sota_factors, published),
        incomplete=incomplete,
    )
    return FactorCodeSet(index=index, files=files)
