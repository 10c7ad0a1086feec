"""Fixtures of the client tests: the sample bundles in a store, served by a real ``rd-assets serve`` or by the
Range-capable look-alike in :mod:`rd_assets_tests.client.range_server` (both processes on 127.0.0.1, stopped by PID).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rd_assets_tests.api.support import Server, serving
from rd_assets_tests.consumer_testkit import build_sample_store

RANGE_SERVER = Path(__file__).with_name("range_server.py")


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sample_store(tmp_path_factory.mktemp("client-store"))


@pytest.fixture(scope="module")
def api(sample_store: Path) -> Iterator[Server]:
    """A real ``rd-assets serve`` over the sample store."""
    with serving(sample_store) as server:
        yield server


@dataclass(frozen=True)
class RangeServer:
    base_url: str
    pid: int
    log: Path

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@contextlib.contextmanager
def range_server(store: Path, work: Path, **behaviour: Any) -> Iterator[RangeServer]:
    """The look-alike as a subprocess; ``behaviour``: cut={relpath: n}, fail_first=n, corrupt=[...], ignore_range."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "range-server.json"
    log = work / "range-server.log"
    config.write_text(json.dumps({"store": str(store), "log": str(log), **behaviour}))
    proc = subprocess.Popen([sys.executable, str(RANGE_SERVER), str(config)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield RangeServer(f"http://127.0.0.1:{port}", proc.pid, log)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
