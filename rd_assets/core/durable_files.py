"""Durable, atomic small-file writes: a reader sees the old file or the new one, never a torn one.

Used for everything rd-assets writes beside the bundles (failure records, publication records); the bundles
themselves go through :mod:`rd_assets.core.bundle.store`, which uses :func:`fsync_dir` for its renames too.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries, so a rename into it survives a crash of the machine."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file, a rename and a fsync of the folder."""
    tmp = path.with_name(f".tmp-{path.name}-{secrets.token_hex(6)}")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
