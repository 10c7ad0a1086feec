"""Task ids: the names of task log dirs, which also name Dagster partitions, bundles and API paths.

RD-Agent names its log dirs ``YYYY-MM-DD_HH-MM-SS-ffffff``, but teams copy, rename and archive runs, so any
*safe* name is a task id: 1-128 characters of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit (so never
``.``, ``..``, a hidden name such as the store's ``.versions``, or an option-like ``-x``). The CLI, the
Dagster sensor and the Results API all use this one pattern.
"""

from __future__ import annotations

import re

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_TASK_ID_RE = re.compile(TASK_ID_PATTERN)


def is_task_id(name: str) -> bool:
    """True only for a safe name (no separators, no leading dot or dash, nothing to traverse with)."""
    return bool(_TASK_ID_RE.fullmatch(name))
