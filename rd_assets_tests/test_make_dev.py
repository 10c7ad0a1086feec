"""``make dev`` refuses a taken port at once, before it installs, extracts or starts anything.

``dg dev`` itself keeps its daemon running when the webserver cannot bind, so without the check a developer
would wait for a UI that never comes. The Makefile runs here from an empty directory (``make -f``): past the
port check its next step needs ``pyproject.toml`` and stops, so nothing is installed or written either way.
"""

import socket
import subprocess
import sys
import time
from pathlib import Path

from rd_assets_tests.dg_dev_testkit import free_port

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def make_dev(cwd: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-f", str(MAKEFILE), "dev", f"DEV_PORT={port}", f"PYTHON={sys.executable}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_dev_fails_at_once_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        start = time.monotonic()
        taken = make_dev(tmp_path, port)
        elapsed = time.monotonic() - start
    assert taken.returncode != 0
    assert f"127.0.0.1:{port} is already in use" in taken.stderr
    assert "pyproject.toml" not in taken.stderr  # stopped before the install step
    assert elapsed < 10
    assert list(tmp_path.iterdir()) == []


def test_make_dev_passes_the_port_check_when_the_port_is_free(tmp_path: Path) -> None:
    free = make_dev(tmp_path, free_port())
    assert "already in use" not in free.stderr
    assert "pyproject.toml" in free.stderr  # went on to the install step, which needs the project
