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


def test_a_corrupt_file_answers_500_logs_one_line_and_recovers(store: Path, tmp_path: Path) -> None:
    """Bytes that no longer match the manifest: a JSON 500 before any byte, one log line, /tasks marks the task;
    the file written back is served again."""
    copy = tmp_path / "store"
    shutil.copytree(store, copy, symlinks=True)
    weight = (copy / PLAIN_TASK).resolve() / "model.pkl"
    original = weight.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0x01
    weight.write_bytes(bytes(data))
    asset = f"/tasks/{PLAIN_TASK}/asset_bytes"
    with serving(copy) as server, httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(2):
            r = client.get(asset, params={"key": "model.pkl"})
            assert r.status_code == 500 and r.headers["content-type"] == "application/json", r.text
            assert r.json()["error"]["code"] == "bundle_corrupt" and "model.pkl" in r.json()["error"]["message"]
        tar = client.get(f"/tasks/{PLAIN_TASK}/bundle.tar")
        assert tar.status_code == 500 and tar.json()["error"]["code"] == "bundle_corrupt"
        rows = {row["task_id"]: row for row in client.get("/tasks").json()["tasks"]}
        assert rows[PLAIN_TASK]["corrupt_files"] == ["model.pkl"] and rows[SIGNED_TASK]["corrupt_files"] == []
        assert client.get("/health").status_code == 200

        weight.write_bytes(original)
        r = client.get(asset, params={"key": "model.pkl"})
        assert r.status_code == 200 and r.content == original
        assert client.get(f"/tasks/{PLAIN_TASK}/bundle.tar").status_code == 200
        assert {row["task_id"]: row["corrupt_files"] for row in client.get("/tasks").json()["tasks"]}[PLAIN_TASK] == []
        log = server.log()
    assert not pid_alive(server.pid)
    lines = [line for line in log.splitlines() if "bundle_corrupt" in line]
    assert len(lines) == 1 and "model.pkl" in lines[0] and PLAIN_TASK in lines[0], log
    assert "Traceback" not in log, log


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
