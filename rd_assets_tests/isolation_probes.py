"""Isolated functions that misbehave on purpose, to prove what the reader process's limits do.

They are real :func:`~rd_assets.core.isolation.isolated` functions: the worker imports this module by name (the repo
root is on its path) exactly as it imports the parsers.
"""

from __future__ import annotations

import os
import time

from rd_assets.core.isolation import isolated


@isolated
def die_of(signal_number: int) -> int:
    """What a memory-corrupting input does to a parser: the process gets a signal."""
    os.kill(os.getpid(), signal_number)
    time.sleep(5)
    return 0


@isolated
def sleep_for(seconds: float) -> int:
    time.sleep(seconds)
    return 0


@isolated
def spin() -> int:
    """Burn CPU without end (a pathological parse)."""
    n = 0
    while True:
        n += 1


@isolated
def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes << 20))


@isolated
def environment() -> list[str]:
    return sorted(os.environ)


@isolated
def open_descriptors() -> list[str]:
    """What the worker holds open besides its standard streams."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if int(fd) > 2:
                held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            continue
    return sorted(held)


@isolated
def write_bytes(path: str) -> str:
    """Try to write into a file: the worker may not write a single byte anywhere."""
    try:
        with open(path, "ab") as fh:
            fh.write(b"x")
            fh.flush()
    except OSError as exc:
        return f"refused: {exc.strerror}"
    return "written"


@isolated
def process_status() -> dict[str, str]:
    """The worker's own ``/proc/self/status`` fields (privileges, limits)."""
    import ctypes

    with open("/proc/self/status") as fh:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
    status["Dumpable"] = str(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE
    return status
