"""Fixtures of the deployment tests: one real PostgreSQL server per session, one database and stack per test."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rd_assets_tests.conftest import RD_ASSETS
from rd_assets_tests.deploy.postgres_server import PostgresServer, PostgresUnavailableError, server_account
from rd_assets_tests.deploy.stack import DeployStack


def started_postgres() -> PostgresServer:
    """A fresh cluster, started; skips only when a root machine has no unprivileged account to run it as."""
    try:
        server_account()
    except PostgresUnavailableError as exc:
        pytest.skip(f"PostgreSQL cannot run here: {exc}")
    server = PostgresServer()
    try:
        server.init()
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = started_postgres()
    try:
        yield server
    finally:
        server.remove()


def database_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]


@pytest.fixture
def make_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., DeployStack]]:
    """Build stacks on a given server (each on a new database); every process is stopped at teardown."""
    stacks: list[DeployStack] = []

    def make(server: PostgresServer, **kwargs: object) -> DeployStack:
        name = database_name(request)
        stack = DeployStack(tmp_path / f"stack{len(stacks)}", server, server.create_database(name), **kwargs)
        stacks.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            stack.stop_all()


@pytest.fixture
def stack(postgres: PostgresServer, make_stack: Callable[..., DeployStack]) -> DeployStack:
    return make_stack(postgres)


def verify(bundle: Path) -> str:
    """``rd-assets verify`` on a published bundle; its report when it says OK."""
    done = subprocess.run([str(RD_ASSETS), "verify", str(bundle)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"rd-assets verify {bundle} failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.rstrip().endswith("OK"), done.stdout
    return done.stdout


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime: equal before and after means nothing was written."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}
