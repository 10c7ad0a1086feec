"""Limits of one factor process (a module of its own so the CLI can build its flags without loading numpy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxLimits:
    """Per factor; the defaults fit RD-Agent's daily factors on a few years of a few thousand instruments."""

    memory_mb: int = 4096
    """Address space on top of the interpreter with pandas loaded (``RLIMIT_AS``)."""
    cpu_seconds: int = 120
    wall_seconds: float = 300.0
    file_mb: int = 2048
    """Largest file it may write (``result.h5`` included)."""
    open_files: int = 256
