"""RD-Agent task ids: the log dir names ``YYYY-MM-DD_HH-MM-SS-ffffff`` that name partitions and bundles."""

from __future__ import annotations

import re

TASK_ID_PATTERN = r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}-\d{6}$"
_TASK_ID_RE = re.compile(TASK_ID_PATTERN)


def is_task_id(name: str) -> bool:
    """True only for a well-formed task id (no separators, no dots, nothing to traverse with)."""
    return bool(_TASK_ID_RE.fullmatch(name))
