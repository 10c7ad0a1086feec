"""``rd-assets serve`` as a real uvicorn process on a free 127.0.0.1 port, exercised with httpx, stopped by PID."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

from rd_assets_tests.api.support import (
    PLAIN_TASK,
    RD_ASSETS,
    SAMPLE_TASKS,
    SIGNED_TASK,
    extract_samples,
    pid_alive,
    serving,
)
from rd_assets_tests.conftest import expected_for


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("served") / "store"
    extract_samples(store)
    return store


def test_serves_the_published_samples(store: Path) -> None:
    with serving(store) as server, httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert client.get("/health").json()["ok"] is True
        assert client.get("/openapi.json").json()["info"]["title"] == "rd-assets Results API"
        listed = client.get("/tasks").json()
        assert {t["task_id"] for t in listed["tasks"]} == set(SAMPLE_TASKS)
        for task_id in (PLAIN_TASK, SIGNED_TASK):
            expected = expected_for(task_id)
            anchor = client.get(f"/tasks/{task_id}/sota_factor_anchor").json()
            assert anchor["last_sota_factor_index"] == expected["last_sota_factor_index"]
            assert anchor["resolved_model_weight_key"] == expected["weights_key"]

            url = f"/tasks/{task_id}/asset_bytes"
            weight = client.get(url, params={"key": expected["weights_key"]})
            assert hashlib.sha256(weight.content).hexdigest() == expected["weights_sha256"]
            assert weight.headers["etag"] == f'"{expected["weights_sha256"]}"'
            assert int(weight.headers["content-length"]) == expected["weights_bytes"]
            cached = client.get(
                url, params={"key": expected["weights_key"]}, headers={"If-None-Match": weight.headers["etag"]}
            )
            assert cached.status_code == 304 and cached.content == b""
            head = client.head(url, params={"key": expected["weights_key"]})
            assert head.status_code == 200 and head.headers["content-length"] == weight.headers["content-length"]

            with client.stream("GET", f"/tasks/{task_id}/bundle.tar") as tar_response:
                data = b"".join(tar_response.iter_bytes())
            assert len(data) == int(tar_response.headers["content-length"])
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                got = tar.extractfile(f"{task_id}/{expected['weights_key']}").read()
            assert hashlib.sha256(got).hexdigest() == expected["weights_sha256"]

            assert client.delete(f"/tasks/{task_id}").status_code == 405
            assert client.get(f"/tasks/{task_id}/asset_bytes", params={"key": "../canary"}).status_code == 422
    assert not pid_alive(server.pid)


def test_token_from_environment(store: Path) -> None:
    with serving(store, token="env-token-123") as server, httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/tasks").status_code == 401
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/tasks", headers={"Authorization": "Bearer env-token-123"}).status_code == 200
    assert not pid_alive(server.pid)


def test_corrupted_bytes_are_cut_off_not_delivered(store: Path, tmp_path: Path) -> None:
    """Headers promise the manifest's hash; bytes that do not match it abort the response mid-stream."""
    copy = tmp_path / "store"
    shutil.copytree(store, copy, symlinks=True)
    weight = (copy / PLAIN_TASK).resolve() / "model.pkl"
    data = bytearray(weight.read_bytes())
    data[-1] ^= 0x01
    weight.write_bytes(bytes(data))
    with serving(copy) as server, httpx.Client(base_url=server.base_url, timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"/tasks/{PLAIN_TASK}/asset_bytes", params={"key": "model.pkl"})
        assert client.get("/health").status_code == 200
    assert not pid_alive(server.pid)


def test_serve_refuses_a_missing_store_or_a_blank_token(store: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(RD_ASSETS), "serve", "--store", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "bundle_store" in done.stderr
    env = {**os.environ, "RD_ASSETS_API_TOKEN": ""}
    done = subprocess.run(
        [str(RD_ASSETS), "serve", "--store", str(store)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2 and "RD_ASSETS_API_TOKEN" in done.stderr
