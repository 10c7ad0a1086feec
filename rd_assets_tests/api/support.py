"""Helpers for the Results API tests and its benchmark: real bundles, bundle variants, a real server process.

Bundles come from the genuine samples through the real pipeline (``rd_assets.core.bundle.extract.extract_task``
publishing with ``rd_assets.core.bundle.store.publish_bundle``). Variants for republish tests change the weight
bytes and get a manifest rebuilt with the core's own helpers, so they are valid bundles the publisher accepts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

from rd_assets.api.app import create_app
from rd_assets.api.settings import ENV_PREFIX, TOKEN_ENV, ApiSettings
from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.bundle.assemble import BundleContent, content_hash, file_entries, json_bytes
from rd_assets.core.bundle.extract import extract_task
from rd_assets.core.contracts.bundle_models import MANIFEST
from rd_assets.core.samples import (
    PLAIN_TASK,
    SAMPLE_PATH_MAP,
    SAMPLE_SIGNING_KEY,
    SAMPLE_TASKS,
    SAMPLES_DIR,
    SIGNED_TASK,
)
from rd_assets.core.session.index import SnapshotIndex
from rd_assets_tests.conftest import RD_ASSETS

__all__ = ["PLAIN_TASK", "SAMPLE_SIGNING_KEY", "SAMPLE_TASKS", "SIGNED_TASK"]

SAMPLES = SAMPLES_DIR
PATH_MAP = PathMap.parse([SAMPLE_PATH_MAP])
REPO_ROOT = Path(__file__).resolve().parents[2]


def extract_samples(store: Path) -> dict[str, BundleContent]:
    """Publish every genuine sample task into ``store``; returns each task's published content."""
    contents = {}
    for task_id in SAMPLE_TASKS:
        outcome = extract_task(
            SAMPLES / "log" / task_id,
            store=store,
            path_map=PATH_MAP,
            index=SnapshotIndex(None),
            signing_key=SAMPLE_SIGNING_KEY if task_id == SIGNED_TASK else None,
        )
        contents[task_id] = outcome.content
    return contents


def with_weight(content: BundleContent, weight: bytes, *, generated_at_utc: str | None = None) -> BundleContent:
    """The same bundle with other weight bytes (same key), its manifest rebuilt by the core's helpers."""
    key = content.manifest.sota_factor_anchor.resolved_model_weight_key
    assert key is not None, "variants need a bundle with a weight"
    files = {rel: data for rel, data in content.files.items() if rel != MANIFEST}
    files[key] = weight
    entries = file_entries(files)
    update = {"files": entries, "content_hash": content_hash(entries)}
    if generated_at_utc is not None:
        update["generated_at_utc"] = generated_at_utc
    manifest = content.manifest.model_copy(update=update)
    files[MANIFEST] = json_bytes(manifest)
    return BundleContent(task_id=content.task_id, files=files, manifest=manifest)


def app_for(store: Path, *, token: str | None = None) -> FastAPI:
    """The API over ``store`` in this process, as ``rd-assets serve`` builds it (token set or none)."""
    return create_app(ApiSettings(store=store, api_token=token))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int
    output: Path
    """Everything the server wrote to stdout and stderr (uvicorn's log and the API's own)."""

    def log(self) -> str:
        return self.output.read_text(errors="replace")


@contextlib.contextmanager
def serving(
    store: Path, *, token: str | None = None, log_level: str = "warning", args: Sequence[str] = ()
) -> Iterator[Server]:
    """``rd-assets serve`` as a real subprocess on a free 127.0.0.1 port; always stopped by its PID.

    ``args`` are extra ``rd-assets serve`` flags (e.g. tighter limits).

    Its output goes to a temporary file (a pipe nobody drains could fill up and stall the server).
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    if token is not None:
        env[TOKEN_ENV] = token
    cmd = [str(RD_ASSETS), "serve", "--store", str(store), "--port", str(port), "--log-level", log_level, *args]
    with tempfile.TemporaryDirectory(prefix="rd-assets-serve-") as tmp:
        output = Path(tmp) / "server.log"
        with output.open("wb") as sink:
            proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}: {output.read_text(errors='replace')}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not answer /health within 20 s")
                time.sleep(0.05)
            yield Server(base, proc.pid, output)
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the PID, SIGKILL it if it lingers, and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
