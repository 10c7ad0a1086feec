"""Schemathesis against the API's own ``/openapi.json``: no 5xx, every response conforms to the spec.

The app is created at import (schemathesis reads the spec while collecting) over an empty temporary store; a
module fixture publishes the genuine samples into it before any case runs, so spec examples hit real bundles.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from rd_assets_tests.api.support import app_for, extract_samples

STORE = Path(tempfile.mkdtemp(prefix="rd-assets-schemathesis-"))
atexit.register(shutil.rmtree, STORE, True)  # also when collection happens but the module's tests are deselected
schema = schemathesis.openapi.from_asgi("/openapi.json", app_for(STORE))


@pytest.fixture(scope="module", autouse=True)
def published_samples() -> None:
    extract_samples(STORE)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: schemathesis.Case) -> None:
    case.call_and_validate()
