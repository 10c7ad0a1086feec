"""A record of every path the core opens or lists during one run, for the no-traversal audit.

The core calls :meth:`opened` / :meth:`listed` right before touching a path; the Dagster check
``no_workspace_traversal`` and the tests compare the record with what the rules allow: files under
``__session__`` and the single anchor parquet.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AccessLog:
    opened_paths: list[str] = field(default_factory=list)
    listed_paths: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def opened(self, path: Path) -> None:
        with self._lock:
            self.opened_paths.append(str(path))

    def listed(self, path: Path) -> None:
        with self._lock:
            self.listed_paths.append(str(path))

    def violations(self, log_dir: Path, allowed_files: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Paths touched that are neither under ``<log_dir>/__session__`` nor explicitly allowed."""
        session = log_dir.resolve() / "__session__"
        bad = []
        for p in [*self.opened_paths, *self.listed_paths]:
            path = Path(p)
            if p in allowed_files or path == session or session in path.parents:
                continue
            bad.append(p)
        return sorted(set(bad))
