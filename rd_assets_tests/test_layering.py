"""The layers README describes are enforced, not just drawn: each one imports only what lies below it.

Every module of a layer is imported in a fresh interpreter where the forbidden packages are blocked in
``sys.modules`` (an import of them raises ``ImportError``), so a single stray import anywhere in the layer fails.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import importlib, pkgutil, sys
for blocked in sys.argv[2].split(","):
    sys.modules[blocked] = None
package = importlib.import_module(sys.argv[1])
walked = pkgutil.walk_packages(package.__path__, sys.argv[1] + ".")
names = [sys.argv[1]] + [m.name for m in walked if not m.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""

CONSUMER_BLOCKED = ("dagster", "dagster_webserver", "fastapi", "uvicorn", "rd_assets.defs", "rd_assets.api")

LAYERS = [
    ("rd_assets.core", ["dagster", "dagster_webserver", "fastapi", "uvicorn", "rd_assets.defs", "rd_assets.api"], 3),
    ("rd_assets.api", ["dagster", "dagster_webserver", "rd_assets.defs", "rd_assets.core.session"], 3),
    ("rd_assets.cli", ["dagster", "dagster_webserver", "rd_assets.defs"], 3),
    # a consumer machine talks HTTP and reads bundles: no Dagster, no server stack
    ("rd_assets.client", [*CONSUMER_BLOCKED], 3),
    ("rd_assets.consumer", [*CONSUMER_BLOCKED], 3),
    # loaded by every Dagster process of a deployment (webserver and daemon too), which need not run the code
    # location: Dagster's storage only (one module)
    ("rd_assets.instance", ["rd_assets.core", "rd_assets.defs", "rd_assets.api", "rd_assets.cli", "fastapi"], 2),
]
"""(layer, what it must not import, how many modules the walk must find at least: the package and its own)"""


@pytest.mark.parametrize(("layer", "blocked", "modules"), LAYERS, ids=[layer for layer, *_ in LAYERS])
def test_layer_imports_nothing_above_it(layer: str, blocked: list[str], modules: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, layer, ",".join(blocked)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) >= modules, f"{layer}: too few modules found: {done.stdout!r}"


def test_the_probe_can_fail() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "rd_assets.defs", "dagster"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "dagster" in done.stderr
