"""Untrusted text (factor names, code, paths and messages from pickles and log dirs) made safe to show and write.

Why: a factor name is whatever a pickle says. Printed raw, ESC/OSC/CSI sequences drive the reader's terminal
(retitle it, clear it, fake output lines) and bidi overrides reorder what is displayed; a surrogate code
point cannot be encoded as UTF-8 at all, so writing it to a file or to JSON crashes. Escaping keeps such
text visible and recognisable without letting it act. Backslashes are left alone: the escapes are for
display, and doubling every backslash would mangle the Windows paths the messages quote.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

_SURROGATES = "\\ud800-\\udfff"
_UNPRINTABLE = re.compile(
    "[\\x00-\\x1f\\x7f-\\x9f"  # C0 (ESC, BEL, CR, LF ...), DEL and C1 (8-bit CSI/OSC ...)
    "\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"  # bidi marks, embeddings, overrides and isolates
    "\\u2028\\u2029"  # line and paragraph separators
    f"{_SURROGATES}]"
)
_SURROGATE = re.compile(f"[{_SURROGATES}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control, bidi, separator or surrogate character shown as ``\\x1b`` / ``\\u202e``."""
    return _UNPRINTABLE.sub(_escape, text)


def escape_surrogates(text: str) -> str:
    """``text`` with each surrogate code point replaced by its literal escape (``\\ud800``), so it encodes as UTF-8.

    The same object comes back when there is none (callers test ``is`` to learn whether anything was escaped).
    """
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(_escape, text)


def utf8_problem(text: str) -> str | None:
    """Why ``text`` cannot be written as UTF-8 (``None`` when it can): the first surrogate and its offset."""
    match = _SURROGATE.search(text)
    return None if match is None else f"not valid UTF-8 text (lone surrogate at offset {match.start()})"


def publishable_code(code: str | None, missing_reason: str) -> tuple[str | None, str | None]:
    """``(code, None)`` when it can be published as a UTF-8 file, else ``(None, why not)``."""
    if code is None:
        return None, missing_reason
    problem = utf8_problem(code)
    return (None, f"code is {problem}") if problem else (code, None)


def encodable(value: Any) -> Any:
    """JSON-like data with :func:`escape_surrogates` on every string and key, so any JSON writer can encode it."""
    if isinstance(value, str):
        return escape_surrogates(value)
    if isinstance(value, dict):
        return {encodable(k): encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(v) for v in value]
    return value


def jsonable(value: BaseModel | Any, *, exclude: set[str] | None = None) -> Any:
    """JSON-ready data of a model (or plain data) with every string and key made UTF-8 encodable.

    Why not ``model_dump(mode="json")``: pydantic turns a surrogate in a dict key into U+FFFD there (the
    name would be lost) and raises on one nested in an ``Any`` value. Escaping the Python-mode dump first keeps
    every text, visibly; non-finite floats become null, as in pydantic's own JSON.
    """
    data = value.model_dump(exclude=exclude) if isinstance(value, BaseModel) else value
    return to_jsonable_python(encodable(data), inf_nan_mode="null")
