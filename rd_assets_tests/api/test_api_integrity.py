"""Damaged bundles answer honestly: a file that no longer matches its manifest is a 500 ``bundle_corrupt`` naming
it, before any byte of the answer; the server logs it in one line, ``/tasks`` marks the task, and once the file
is repaired it is served again (the verdict cache is keyed by file identity, which any write changes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from rd_assets.api.bundle_reader import BundleReader
from rd_assets.api.streaming import StreamedBody
from rd_assets.core.contracts.bundle_models import MANIFEST
from rd_assets.core.contracts.models import SCHEMA_VERSION
from rd_assets_tests.api.support import PLAIN_TASK, SAMPLE_TASKS, SIGNED_TASK, app_for, extract_samples

FILE_ROUTES = (
    f"/tasks/{PLAIN_TASK}/asset_bytes?key=model.pkl",
    f"/tasks/{PLAIN_TASK}/bundle.tar",
)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("integrity") / "store"
    extract_samples(store)
    return store


@pytest.fixture
def store(published: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(published, copy, symlinks=True)
    return copy


def assert_corrupt(response: httpx.Response, relpath: str) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "bundle_corrupt" and relpath in error["message"], error


def flip_a_byte(path: Path, at: int = 100) -> bytes:
    """Damage ``path`` in place (same size) and return its original bytes."""
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[at] ^= 0xFF
    path.write_bytes(bytes(damaged))
    return original


def corrupt_rows(client: TestClient) -> dict[str, list[str]]:
    return {row["task_id"]: row["corrupt_files"] for row in client.get("/tasks").json()["tasks"]}


def test_tampered_file_is_never_served_as_valid(store: Path) -> None:
    """Bytes that no longer hash to the manifest: every route that would send them answers 500 bundle_corrupt.

    The files are first served intact (so the reader's per-file and per-manifest memos are warm): a later
    rewrite must still be caught, because any write changes the identity those memos are keyed on.
    """
    version = (store / PLAIN_TASK).resolve()
    client = TestClient(app_for(store))
    url = f"/tasks/{PLAIN_TASK}/asset_bytes"
    assert client.get(f"/tasks/{PLAIN_TASK}/factor_order").status_code == 200
    assert client.get(url, params={"key": "model.pkl"}).status_code == 200

    order = version / "factor_order.json"
    order.write_bytes(order.read_bytes().replace(f'"{SCHEMA_VERSION}"'.encode(), b'"9.9"', 1))
    data = bytearray(flip_a_byte(version / "model.pkl"))
    data[100] ^= 0xFF
    assert_corrupt(client.get(f"/tasks/{PLAIN_TASK}/factor_order"), "factor_order.json")
    assert_corrupt(client.get(url, params={"key": "model.pkl"}), "model.pkl")
    assert_corrupt(client.get(url, params={"key": "model.pkl"}, headers={"Range": "bytes=0-9"}), "model.pkl")
    head = client.head(url, params={"key": "model.pkl"})
    assert head.status_code == 500 and head.content == b""
    assert_corrupt(client.get(f"/tasks/{PLAIN_TASK}/bundle.tar"), "factor_order.json")  # the first, sorted
    (version / "model.pkl").write_bytes(bytes(data[:-1]))
    assert_corrupt(client.get(url, params={"key": "model.pkl"}), "model.pkl")
    assert client.get(f"/tasks/{SIGNED_TASK}/factor_order").status_code == 200

    manifest_path = version / MANIFEST
    manifest = json.loads(manifest_path.read_bytes())
    manifest["reasons"], manifest["selection_ready"] = ["edited on disk"], False
    manifest_path.write_text(json.dumps(manifest))
    assert client.get(f"/tasks/{PLAIN_TASK}/sota_factor_anchor").json()["reasons"] == ["edited on disk"]


def test_corrupt_file_is_marked_logged_once_and_served_again_when_repaired(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weight = (store / PLAIN_TASK).resolve() / "model.pkl"
    client = TestClient(app_for(store))
    assert all(client.get(route).status_code == 200 for route in FILE_ROUTES)
    assert corrupt_rows(client) == {t: [] for t in SAMPLE_TASKS}

    original = flip_a_byte(weight)
    with caplog.at_level(logging.ERROR, logger="rd_assets.api"):
        for route in (*FILE_ROUTES, *FILE_ROUTES):
            assert_corrupt(client.get(route), "model.pkl")
    logged = [r for r in caplog.records if r.name == "rd_assets.api"]
    assert len(logged) == 1 and logged[0].exc_info is None, [r.getMessage() for r in logged]
    line = logged[0].getMessage()
    assert line.startswith("bundle_corrupt: model.pkl of task " + PLAIN_TASK) and "\n" not in line
    assert "sha256" in line
    assert corrupt_rows(client) == {**{t: [] for t in SAMPLE_TASKS}, PLAIN_TASK: ["model.pkl"]}
    status = client.get(f"/tasks/{PLAIN_TASK}/status").json()
    assert status["state"] == "ready" and status["corrupt_files"] == ["model.pkl"]

    weight.write_bytes(original)
    assert corrupt_rows(client)[PLAIN_TASK] == []  # the listing re-checks a file that changed since
    r = client.get(FILE_ROUTES[0])
    assert r.status_code == 200 and r.content == original
    assert client.get(FILE_ROUTES[1]).status_code == 200

    flip_a_byte(weight)
    assert_corrupt(client.get(FILE_ROUTES[0]), "model.pkl")
    weight.write_bytes(original)
    assert client.get(FILE_ROUTES[0]).content == original  # repaired: hashed again, served again
    assert corrupt_rows(client)[PLAIN_TASK] == []


def test_a_file_rewritten_while_it_is_sent_is_cut_short(store: Path) -> None:
    """Verified, then rewritten before the last chunk: the body ends short and is never completed."""
    reader = BundleReader(store)
    handle = reader.open_file(reader.pin(PLAIN_TASK), "model.pkl")
    reader.verifier.check(handle)
    weight = Path(handle.directory) / "model.pkl"
    weight.write_bytes(weight.read_bytes())  # the same bytes, but a write: its identity changes
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    body = StreamedBody(handle.chunks(), handle.close, handle.size, {}, "application/octet-stream")
    anyio.run(body, {"type": "http", "method": "GET"}, receive, send)
    assert sent[0]["type"] == "http.response.start"
    assert not [m for m in sent if m["type"] == "http.response.body" and not m.get("more_body", False)]
    assert sum(len(m.get("body", b"")) for m in sent[1:]) < handle.size
    assert handle.fd == -1

    handle = reader.open_file(reader.pin(PLAIN_TASK), "model.pkl")
    assert reader.verifier.needs_hashing(handle)  # a new identity: hashed again, and the same bytes match
    reader.verifier.check(handle)
    assert hashlib.sha256(b"".join(handle.chunks())).hexdigest() == handle.sha256
    handle.close()
