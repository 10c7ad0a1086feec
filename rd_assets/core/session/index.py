"""On-disk index of per-snapshot summaries, so an unchanged snapshot is never unpickled twice.

Entries are keyed by (log dir, relpath, size, mtime_ns, signing-key and policy fingerprint with the file's inode
and ctime, summary version): any change to a file (even a same-size swap with its mtime set back), to the key that
verifies it, or to the summary format makes a fresh entry. SQLite (WAL)
gives safe concurrent use across processes. The index lives outside every log dir (it is opened lazily and
an index path inside the log dir being read is refused before anything is created); when it cannot be
opened the reader still works, it only loses the cache, and says so.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

INDEX_FORMAT = "5"
ENV_INDEX_PATH = "RD_ASSETS_INDEX"


def default_index_path() -> Path:
    env = os.environ.get(ENV_INDEX_PATH)
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rd-assets" / "snapshot-index.sqlite3"


def key_fingerprint(
    signing_key: str | bytes | None, *, require_signature: bool = False, allow_unsigned: bool = False
) -> str:
    """Cache-key part for the signature policy: a summary read under another key or policy is not reused."""
    policy = ("+required" if require_signature else "") + ("+unsigned" if allow_unsigned else "")
    if signing_key is None:
        return "-" + policy
    raw = signing_key.encode() if isinstance(signing_key, str) else signing_key
    return hashlib.sha256(b"rd-assets-index:" + raw).hexdigest()[:16] + policy


@dataclass(frozen=True)
class FileKey:
    log_dir: str
    relpath: str
    size: int
    mtime_ns: int
    key_fp: str


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    kind TEXT NOT NULL, log_dir TEXT NOT NULL, relpath TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, key_fp TEXT NOT NULL, version TEXT NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (kind, log_dir, relpath)
);
"""


class SnapshotIndex:
    """Two kinds of entry: ``summary`` (hist length or skip reason) and ``trace`` (the interpretation)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.unavailable_reason: str | None = None
        self._db: sqlite3.Connection | None = None
        self._opened = path is None  # opened lazily, so a log dir can be excluded before anything is created
        if path is None:
            self.unavailable_reason = "index disabled"

    def _connection(self) -> sqlite3.Connection | None:
        path = self.path
        if self._opened or path is None:
            return self._db
        self._opened = True
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        except (OSError, sqlite3.Error) as exc:
            self.unavailable_reason = f"index {path} unavailable: {exc}"
        return self._db

    def exclude_tree(self, root: Path) -> None:
        """Nothing is ever written under a log dir: an index located inside ``root`` is not used (nor created)."""
        if self.path is None:
            return
        index_path, tree = self.path.resolve(), root.resolve()
        if index_path == tree or tree in index_path.parents:
            self.close()
            self.unavailable_reason = f"index {self.path} lies inside the log dir {root}: not used"

    @property
    def enabled(self) -> bool:
        return self._connection() is not None

    def get_many(self, kind: str, log_dir: str) -> dict[str, tuple[FileKey, str]]:
        """Every entry of one kind for one log dir, by relpath (one query per task: the warm path)."""
        db = self._connection()
        if db is None:
            return {}
        try:
            rows = db.execute(
                "SELECT relpath, size, mtime_ns, key_fp, payload FROM entries "
                "WHERE kind = ? AND log_dir = ? AND version = ?",
                (kind, log_dir, INDEX_FORMAT),
            ).fetchall()
        except sqlite3.Error as exc:
            self.unavailable_reason = f"index read failed: {exc}"
            return {}
        return {r[0]: (FileKey(log_dir, r[0], r[1], r[2], r[3]), r[4]) for r in rows}

    def put(self, kind: str, key: FileKey, payload: str) -> None:
        db = self._connection()
        if db is None:
            return
        try:
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, key.log_dir, key.relpath, key.size, key.mtime_ns, key.key_fp, INDEX_FORMAT, payload),
            )
        except sqlite3.Error as exc:
            self.unavailable_reason = f"index write failed: {exc}"

    def close(self) -> None:
        self._opened = True
        if self._db is not None:
            self._db.close()
            self._db = None
