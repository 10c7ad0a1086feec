"""Cheap change detection for task log dirs: which tasks exist and whether their sessions moved on.

Pure core (no Dagster): the sensor and the schedule call it on every tick, so it only lists directories
and stats files, never opens one. A session's fingerprint is (snapshot count, total size, newest
mtime_ns) of its ``__session__/<loop>/<step>_<name>`` files, found by :func:`rd_assets.core.session.snapshots.discover`
so that "what counts as a snapshot" has a single definition. RD-Agent only ever adds or rewrites
snapshot files, so any change it makes moves at least one of the three numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rd_assets.core.contracts.models import SnapshotSelection
from rd_assets.core.errors import InvalidLogDirError
from rd_assets.core.session.snapshots import SESSION_DIR, discover
from rd_assets.core.task_ids import is_task_id


@dataclass(frozen=True)
class SessionFingerprint:
    snapshot_count: int
    total_size: int
    newest_mtime_ns: int

    @classmethod
    def of(cls, files: Iterable[tuple[int, int]]) -> SessionFingerprint:
        """From ``(size, mtime_ns)`` pairs, one per snapshot file."""
        count = total = newest = 0
        for size, mtime_ns in files:
            count += 1
            total += size
            newest = max(newest, mtime_ns)
        return cls(count, total, newest)

    @property
    def token(self) -> str:
        """Compact, stable text form used in run keys, run tags and state files."""
        return f"{self.snapshot_count}-{self.total_size}-{self.newest_mtime_ns}"


def session_fingerprint(log_dir: Path) -> SessionFingerprint:
    """Fingerprint of a task log dir, by stat only."""
    return SessionFingerprint.of((s.size, s.mtime_ns) for s in discover(log_dir))


def selection_fingerprint(selection: SnapshotSelection) -> SessionFingerprint:
    """The fingerprint of the files a selection actually considered (one candidate per snapshot file).

    Recording this one, rather than re-statting the log dir later, ties a published bundle to exactly
    the session state it was built from, even when RD-Agent wrote a new snapshot meanwhile.
    """
    return SessionFingerprint.of((c.size, c.mtime_ns) for c in selection.candidates)


@dataclass(frozen=True)
class LogRootScan:
    """Valid task dirs (with a ``__session__`` folder) and the names that were not taken, with why."""

    tasks: dict[str, Path]
    ignored: list[str] = field(default_factory=list)
    """Entries whose name is not a task id, or that are not plain directories."""
    without_session: list[str] = field(default_factory=list)
    """Task ids that have no ``__session__`` folder (yet)."""

    @property
    def ignored_count(self) -> int:
        return len(self.ignored)


def scan_log_root(log_root: Path) -> LogRootScan:
    """List ``log_root`` once; a task is a directory named like a task id holding ``__session__``."""
    try:
        entries = list(os.scandir(log_root))
    except FileNotFoundError as exc:
        raise InvalidLogDirError("log root does not exist", path=str(log_root)) from exc
    except NotADirectoryError as exc:
        raise InvalidLogDirError("log root is not a directory", path=str(log_root)) from exc
    except OSError as exc:
        raise InvalidLogDirError(f"cannot list log root: {exc.strerror or exc}", path=str(log_root)) from exc
    tasks: dict[str, Path] = {}
    ignored: list[str] = []
    without_session: list[str] = []
    for entry in entries:
        if not is_task_id(entry.name) or not entry.is_dir(follow_symlinks=False):
            ignored.append(entry.name)
        elif os.path.isdir(os.path.join(entry.path, SESSION_DIR)):
            tasks[entry.name] = Path(entry.path)
        else:
            without_session.append(entry.name)
    return LogRootScan(dict(sorted(tasks.items())), sorted(ignored), sorted(without_session))
