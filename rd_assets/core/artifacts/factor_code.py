"""Factor code files of the bundle and the consumer keys that point at them.

Each SOTA factor's ``factor.py`` text becomes ``factors/<safe name>.py``; the anchor's own sub_task-0 code is
also ``factor_entry.py``. Consumers address code by file_dict-style keys (``factor.py``,
``based_factor_{i}/factor.py``), kept in :class:`FactorCodeIndex`. An ``ast`` parse (never an import or exec)
checks that each file defines ``calculate_<name>`` or a def/class ``<name>``; every factor without such code
is listed in ``incomplete`` with the reason. Code that cannot be written as UTF-8 (a lone surrogate from the
pickle) is not published at all: a consumer must be able to read every code file as UTF-8 text.

File names are derived from untrusted names, so :func:`safe_file_stem` makes one that is valid on every
consumer's filesystem (Windows included); the original name stays in the JSON (``FactorCodeFile.name``,
``SotaFactorsDoc.code_relpaths``).
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass

from rd_assets.core.contracts.artifact_models import BasedFactorEntry, FactorCodeFile, FactorCodeIndex
from rd_assets.core.contracts.models import FactorRecord, SotaFactorExperiment
from rd_assets.core.errors import RdAssetsError
from rd_assets.core.isolation import isolated
from rd_assets.core.text_safety import publishable_code

FACTOR_ENTRY = "factor_entry.py"
ENTRY_KEY = "factor.py"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
STEM_MAX = 100
"""Longer stems are cut here and get a hash suffix: far below NAME_MAX (255 bytes) even with ``__n`` and ``.py``."""
_HASH_CHARS = 12
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
)


@dataclass(frozen=True)
class FactorCodeSet:
    """The index (JSON-able) and the code bytes by bundle relpath."""

    index: FactorCodeIndex
    files: dict[str, bytes]


def safe_file_stem(name: str) -> str:
    """A file stem valid for any factor name on POSIX and Windows consumers alike.

    ``[A-Za-z0-9_.-]`` only; never empty; no leading dot (no hidden files, never ``.``/``..``) or dash (an
    option to the consumer's tools, and refused by the store); at most :data:`STEM_MAX` characters plus
    ``-<sha256 prefix of the name>`` when cut, so long names sharing a prefix stay distinct; never a Windows
    device name (``CON``, ``com1.x`` ...). The file name ``<stem>.py`` never ends in a dot or space.
    """
    stem = _UNSAFE.sub("_", name) or "_"
    if stem[0] in ".-":
        stem = "_" + stem[1:]
    if len(stem) > STEM_MAX:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        stem = f"{stem[:STEM_MAX]}-{digest[:_HASH_CHARS]}"
    if stem.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        stem = "_" + stem
    return stem


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


def _code(code: str | None, missing_reason: str | None) -> tuple[str | None, str | None]:
    """``(code, None)`` when it can be published as a UTF-8 file, else ``(None, why not)``."""
    return publishable_code(code, missing_reason or "no code")


@dataclass(frozen=True)
class CodeOutline:
    """What a code file defines at module level, or why it does not parse."""

    defined: list[str]
    syntax_error: str | None = None


@isolated
def outline_code(text: str) -> CodeOutline:
    """``ast.parse`` (never an import or exec) in the isolated reader: hostile code can exhaust the parser
    (``-`` * 10**6 is a MemoryError, ``a.`` * 10**6 a RecursionError), which the reader turns into a typed limit."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return CodeOutline([], f"syntax error at line {exc.lineno}: {exc.msg}")
    kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    return CodeOutline(sorted({node.name for node in tree.body if isinstance(node, kinds)}))


def code_problem(name: str, code: str | None, missing_reason: str | None) -> str | None:
    """Why ``code`` does not provide factor ``name`` (``None`` when it does)."""
    text, refusal = _code(code, missing_reason)
    if text is None:
        return refusal
    try:
        outline = outline_code(text)
    except RdAssetsError as exc:
        return f"the code could not be parsed ({exc.code}: {exc.message})"
    if outline.syntax_error is not None:
        return outline.syntax_error
    if f"calculate_{name}" in outline.defined or name in outline.defined:
        return None
    return f"defines neither calculate_{name} nor a def/class {name} at module level"


def _file_entry(record: FactorRecord, relpath: str, published: bool) -> FactorCodeFile:
    problem = code_problem(record.name, record.code, record.code_missing_reason)
    return FactorCodeFile(
        name=record.name,
        relpath=relpath if published else None,
        file_dict_key=record.file_dict_key,
        sha256=record.code_sha256 if published else None,
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
    codes = {f.file_dict_key: _code(f.code, f.code_missing_reason) for f in anchor.sota_factors}
    entries = [_file_entry(f, relpaths[f.name], codes[f.file_dict_key][0] is not None) for f in anchor.sota_factors]
    files = {
        relpaths[f.name]: text.encode("utf-8")
        for f in anchor.sota_factors
        if (text := codes[f.file_dict_key][0]) is not None
    }
    incomplete = [f"{e.name}: {e.missing_reason}" for e in entries if not e.defines_function]

    entry = next((f for f in anchor.sota_factors if f.based_index is None and f.sub_task_index == 0), None)
    entry_text, why = (None, "the anchor's sub_task 0 is not among the SOTA factors")
    if entry is not None:
        entry_text, why = codes[entry.file_dict_key]
    if entry_text is not None:
        files[FACTOR_ENTRY] = entry_text.encode("utf-8")
        entry_key: str | None = ENTRY_KEY
    else:
        entry_key = None
        incomplete.append(f"{FACTOR_ENTRY}: {why}")

    published = {key for key, (text, _) in codes.items() if text is not None}
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
