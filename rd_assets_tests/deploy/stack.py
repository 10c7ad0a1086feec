"""The production process layout, started for real: code server, webserver and daemon on one PostgreSQL instance.

Every process is what ``deploy/README.md`` tells an operator to start, with ``deploy/dagster.yaml`` as the
instance and ``deploy/workspace.yaml`` (or a two-location variant) as the workspace:

* ``dagster api grpc -m rd_assets.definitions`` serves the code location and spawns one run worker process
  per run (the DefaultRunLauncher asks it to),
* ``dagster-webserver -w workspace.yaml`` serves the UI and its GraphQL API,
* ``dagster-daemon run -w workspace.yaml`` evaluates the sensor, dequeues runs, retries and monitors them.

Each starts in its own session (process group) on 127.0.0.1 and is stopped by its PID / group id. The
helpers talk to the webserver's GraphQL only, so they hold whichever assets and steps the code location has.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from rd_assets.core.samples import SAMPLE_PATH_MAP, SAMPLE_SIGNING_KEY, SAMPLES_DIR
from rd_assets_tests.deploy.postgres_server import PostgresServer, free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
SAMPLE_LOGS = SAMPLES_DIR / "log"
LOCATION = "rd_assets"
CODE_LOCATION = ("-m", "rd_assets.definitions")
REPOSITORY = "__repository__"
ASSETS = ("session_snapshot", "last_sota_factor_exp", "model_weight", "factor_order", "factor_code", "aistock_bundle")
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")
STOP_ORDER = ("daemon", "webserver", "code-server")
"""Daemon first (no new runs), then the webserver, then code servers (with the run workers they spawned)."""


def dagster_cmd(name: str) -> str:
    """A console script installed next to the running interpreter (``dagster``, ``dagster-daemon``, ...)."""
    path = shutil.which(name, path=str(BIN))
    if path is None:
        raise FileNotFoundError(f"{name} is not installed next to {sys.executable}")
    return path


def default_signals() -> None:
    """Runs in the child before exec: a background shell (CI, nohup) starts us with SIGINT ignored, which exec
    keeps; Dagster's processes then sit out SIGTERM's grace period instead of shutting down."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def copy_task(task_id: str, log_root: Path, *, as_id: str | None = None) -> Path:
    """Drop a copy of a genuine sample task into ``log_root`` (optionally under another task id)."""
    target = log_root / (as_id or task_id)
    shutil.copytree(SAMPLE_LOGS / task_id, target)
    for path in [target, *target.rglob("*")]:  # the shared samples are read-only; copies stay readable
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@dataclass
class Service:
    """One started process (the leader of its own process group)."""

    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def stop(self, descendants: list[psutil.Process] | None = None) -> None:
        """SIGTERM the group (a clean shutdown), then SIGKILL; then every descendant it left, by PID."""
        descendants = self.descendants() if descendants is None else descendants
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            if not self.alive():
                break
            self.signal_group(sig)
            end = time.monotonic() + grace
            while time.monotonic() < end and self.alive():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.2)
                if self.proc.poll() is not None:
                    time.sleep(0.1)  # the leader is gone; its children may still be exiting
        self.proc.wait(timeout=10)
        _, left = psutil.wait_procs(descendants, timeout=10)
        for proc in left:  # a descendant that moved to its own session (none should)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        if self.alive() or left:
            raise RuntimeError(f"{self.name}: processes outlived their group {self.pid}: {left}")

    def tail(self, chars: int = 4000) -> str:
        try:
            return f"--- {self.name} ({self.log.name}) ---\n" + self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class CodeServer:
    service: Service
    port: int
    location: str

    def wait_serving(self, on_timeout: Callable[[], str], timeout: float = 120) -> None:
        """The server binds its port only after it loaded the code location, so a connect means ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.service.proc.poll() is not None:
                raise RuntimeError(f"code server exited with {self.service.proc.returncode}\n{on_timeout()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.2)
        raise RuntimeError(f"code server not serving on port {self.port} after {timeout:.0f} s\n{on_timeout()}")

    def run_workers(self) -> list[psutil.Process]:
        """The run worker processes this code server spawned (its children other than multiprocessing helpers)."""
        try:
            children = psutil.Process(self.service.pid).children()
        except psutil.NoSuchProcess:
            return []
        workers = []
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                cmdline = " ".join(child.cmdline())
                if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
                    workers.append(child)
        return workers


@dataclass
class DeployStack:
    """Directories, environment and processes of one deployment under ``root`` on one PostgreSQL database."""

    root: Path
    postgres: PostgresServer
    database: str
    services: list[Service] = field(default_factory=list)
    code_servers: list[CodeServer] = field(default_factory=list)
    webserver_url: str | None = None
    started: int = 0
    shared_log_root: Path | None = None
    """A log root outside ``root`` (the benchmark's generated tasks); default ``<root>/log``."""

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEPLOY / "dagster.yaml", self.home / "dagster.yaml")

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def log_root(self) -> Path:
        return self.shared_log_root or self.root / "log"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def logs(self) -> Path:
        return self.root / "process-logs"

    def index_path(self, host: str) -> Path:
        return self.root / f"index-{host}" / "snapshot-index.sqlite3"

    def env(self, host: str = "a", **extra: str) -> dict[str, str]:
        """What every process of one (simulated) host gets: instance, connection, rd-assets settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RD_ASSETS_", "DAGSTER_"))}
        env |= self.postgres.env(self.database)
        env |= {
            "DAGSTER_HOME": str(self.home),
            "RD_ASSETS_LOG_ROOT": str(self.log_root),
            "RD_ASSETS_STORE": str(self.store),
            "RD_ASSETS_INDEX": str(self.index_path(host)),
            "RD_ASSETS_PATH_MAP": SAMPLE_PATH_MAP,
            "RD_ASSETS_SIGNING_KEY": SAMPLE_SIGNING_KEY,
            "RD_ASSETS_ALLOW_UNSIGNED": "1",
            "RD_ASSETS_KEEP_VERSIONS": "3",
        }
        return env | extra

    def _start(self, name: str, argv: list[str], env: Mapping[str, str]) -> Service:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.started += 1
        log = self.logs / f"{self.started:02d}-{name.replace(':', '-')}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.root,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=default_signals,
            )
        service = Service(name, proc, log)
        self.services.append(service)
        return service

    def start_code_server(
        self,
        location: str = LOCATION,
        host: str = "a",
        target: tuple[str, ...] = CODE_LOCATION,
        extra_env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> CodeServer:
        port = port or free_port()
        argv = [dagster_cmd("dagster"), "api", "grpc", *target]
        argv += ["-h", "127.0.0.1", "-p", str(port), "--location-name", location]
        service = self._start(f"code-server:{location}", argv, self.env(host, **(extra_env or {})))
        server = CodeServer(service, port, location)
        self.code_servers.append(server)
        server.wait_serving(on_timeout=self.tails)
        return server

    def workspace(self) -> Path:
        """``deploy/workspace.yaml`` for one code server; a list of ``grpc_server`` entries for more."""
        if len(self.code_servers) == 1:
            return DEPLOY / "workspace.yaml"
        entries = [
            {"grpc_server": {"host": "127.0.0.1", "port": s.port, "location_name": s.location}}
            for s in self.code_servers
        ]
        path = self.root / "workspace.yaml"
        path.write_text(yaml.safe_dump({"load_from": entries}, sort_keys=False))
        return path

    def workspace_env(self) -> dict[str, str]:
        """Webserver and daemon: the instance and where the code server is, no rd-assets setting at all
        (sensors and runs execute in the code server's processes)."""
        first = self.code_servers[0]
        env = {k: v for k, v in self.env().items() if not k.startswith("RD_ASSETS_")}
        return env | {"RD_ASSETS_CODE_SERVER_HOST": "127.0.0.1", "RD_ASSETS_CODE_SERVER_PORT": str(first.port)}

    def start_webserver(self) -> str:
        port = free_port()
        argv = [dagster_cmd("dagster-webserver"), "-w", str(self.workspace()), "-h", "127.0.0.1", "-p", str(port)]
        self._start("webserver", argv, self.workspace_env())
        self.webserver_url = f"http://127.0.0.1:{port}"
        return self.webserver_url

    def start_daemon(self) -> Service:
        argv = [dagster_cmd("dagster-daemon"), "run", "-w", str(self.workspace())]
        return self._start("daemon", argv, self.workspace_env())

    def stop(self, service: Service) -> None:
        service.stop()
        self.services.remove(service)

    def start_with_task(self, task_id: str) -> CodeServer:
        """The whole deployment with the sample ``task_id`` dropped into its log root (the sensor's first tick
        requests its run); the code server is returned, its run workers are what the fault tests strike."""
        copy_task(task_id, self.log_root)
        code_server = self.start_code_server()
        self.start_webserver()
        self.start_daemon()
        return code_server

    def kill_host(self, code_server: CodeServer) -> None:
        """What a host's death looks like from elsewhere: its code server and every run worker it spawned
        vanish at once (SIGKILL to the process group), with no chance to report anything."""
        processes = code_server.service.descendants()
        code_server.service.signal_group(signal.SIGKILL)
        for proc in processes:  # a run worker may have left the group; a dead host takes it all the same
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        code_server.service.proc.wait(timeout=30)
        psutil.wait_procs(processes, timeout=30)
        self.services.remove(code_server.service)
        self.code_servers.remove(code_server)

    def configure_instance(self, **sections: Mapping[str, Any]) -> None:
        """Override top-level sections of this stack's copy of deploy/dagster.yaml (say, shorter timeouts)."""
        path = self.home / "dagster.yaml"
        config = yaml.safe_load(path.read_text())
        for name, values in sections.items():
            config[name] = {**config.get(name, {}), **values}
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def stop_all(self) -> None:
        """Every process: all groups get SIGTERM at once (daemon first), then each is waited for."""
        order = sorted(self.services, key=lambda s: STOP_ORDER.index(s.name.split(":")[0]))
        descendants = {s.pid: s.descendants() for s in order}
        for service in order:
            service.signal_group(signal.SIGTERM)
        errors = []
        for service in order:
            try:
                service.stop(descendants[service.pid])
            except RuntimeError as exc:
                errors.append(str(exc))
        self.services.clear()
        if errors:
            raise RuntimeError("; ".join(errors))

    def tails(self) -> str:
        return "\n".join(s.tail() for s in self.services) + "\n--- postgres ---\n" + self.postgres.log_tail()


class GraphQL:
    """The webserver's ``/graphql``: what the UI shows, queried the way the UI does."""

    def __init__(self, url: str, on_timeout: Callable[[], str] = lambda: "") -> None:
        self.client = httpx.Client(base_url=url, timeout=30)
        self.on_timeout = on_timeout

    def close(self) -> None:
        self.client.close()

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self.client.post("/graphql", json={"query": query, "variables": variables})
        if response.status_code != 200:
            raise AssertionError(f"GraphQL answered {response.status_code}: {response.text[:4000]}")
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait(self, what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
        """Poll ``probe`` until it returns something truthy; fail with the process logs after ``timeout``."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = probe()
            except (httpx.HTTPError, AssertionError) as exc:
                value, last_error = None, exc
            else:
                last_error = None
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})\n{self.on_timeout()}"
        )

    def ready(self, timeout: float = 120, assets: tuple[str, ...] = ASSETS) -> None:
        """The webserver answers and has loaded the code location(s) with ``assets``."""

        def loaded() -> bool:
            nodes = self(ASSET_NODES)["assetNodes"]
            return set(assets) <= {n["assetKey"]["path"][-1] for n in nodes}

        self.wait("the webserver to load the code location", loaded, timeout)

    def defined_checks(self) -> set[str]:
        """Names of every asset check the loaded code location defines on the task assets."""
        names = set()
        for node in self(ASSET_NODES)["assetNodes"]:
            if node["assetKey"]["path"][-1] in ASSETS:
                names |= {c["name"] for c in node["assetChecksOrError"].get("checks", [])}
        return names

    def partitions(self) -> list[str]:
        node = self(PARTITIONS, path=[ASSETS[0]])["assetNodeOrError"]
        return list(node.get("partitionKeys") or [])

    def runs(self, **run_filter: Any) -> list[dict[str, Any]]:
        """Every run (newest first) with status, tags and timing; ``run_filter`` is a GraphQL RunsFilter."""
        found = self(RUNS, filter=run_filter)["runsOrError"]
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in found["results"]]

    def runs_of(self, task_id: str) -> list[dict[str, Any]]:
        return self.runs(tags=[{"key": "dagster/partition", "value": task_id}])

    def materialized_partitions(self, asset: str) -> dict[str, list[str]]:
        """partition -> run ids of its materializations of ``asset`` (newest first)."""
        mats = self(MATERIALIZATIONS, path=[asset])["assetOrError"].get("assetMaterializations") or []
        found: dict[str, list[str]] = {}
        for m in mats:
            found.setdefault(m["partition"], []).append(m["runId"])
        return found

    def checks_of_run(self, run_id: str) -> dict[str, str]:
        """check name -> status of every asset check evaluated in ``run_id``."""
        events = self.run_events(run_id)
        return {
            e["evaluation"]["checkName"]: "PASSED" if e["evaluation"]["success"] else "FAILED"
            for e in events
            if e["__typename"] == "AssetCheckEvaluationEvent"
        }

    def checks_by_partition(self, run_id: str) -> dict[str, dict[str, str]]:
        """partition -> check name -> status, for a run over several partitions (a backfill batch)."""
        found: dict[str, dict[str, str]] = {}
        for e in self.run_events(run_id):
            if e["__typename"] == "AssetCheckEvaluationEvent":
                evaluation = e["evaluation"]
                status = "PASSED" if evaluation["success"] else "FAILED"
                found.setdefault(evaluation["partition"], {})[evaluation["checkName"]] = status
        return found

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            conn = self(RUN_EVENTS, runId=run_id, cursor=cursor)["logsForRun"]
            if "events" not in conn:
                raise AssertionError(f"logsForRun({run_id}): {conn}")
            events += conn["events"]
            if not conn["hasMore"]:
                return events
            cursor = conn["cursor"]

    def mid_run(self, task_id: str, timeout: float) -> str:
        """The id of the sensor's run of ``task_id``, once it has started and materialized its first asset.

        The moment the fault tests strike: the run is under way and has written to the store and the event log.
        """
        run = self.wait(
            "the sensor's run to start",
            lambda: next((r for r in self.runs_of(task_id) if r["status"] == "STARTED"), None),
            timeout,
            interval=0.1,
        )
        run_id: str = run["runId"]
        self.wait(
            "the run's first materialization",
            lambda: any(e["__typename"] == "MaterializationEvent" for e in self.run_events(run_id)),
            timeout,
            interval=0.1,
        )
        return run_id

    def the_run_worker(self, code_server: CodeServer, run_id: str) -> psutil.Process:
        """The one run worker ``code_server`` spawned, checked to be the process that executes ``run_id``."""
        workers = code_server.run_workers()
        assert [w.pid for w in workers] == [self.worker_pid(run_id)], "the one run worker is the run's process"
        return workers[0]

    def worker_pid(self, run_id: str) -> int:
        """The PID of the process that executed ``run_id`` (the launcher's "Started process for run" event)."""
        for event in self.run_events(run_id):
            match = WORKER_PID.search(event.get("message") or "")
            if match:
                return int(match.group(1))
        raise AssertionError(f"run {run_id} has no 'Started process for run' event")

    def sensor(self, name: str = "rd_task_sensor", location: str = LOCATION) -> dict[str, Any]:
        selector = {"repositoryLocationName": location, "repositoryName": REPOSITORY, "sensorName": name}
        return self(SENSOR, selector=selector)["sensorOrError"]

    def stop_sensor(self, name: str = "rd_task_sensor", location: str = LOCATION) -> None:
        """Turn a sensor off, as the UI's toggle does (the state is kept in the instance)."""
        sensor_id = self.sensor(name, location)["id"]
        result = self(STOP_SENSOR, id=sensor_id)["stopSensor"]
        assert result.get("instigationState", {}).get("status") == "STOPPED", result

    def add_partitions(self, keys: list[str], location: str = LOCATION) -> None:
        """Add ``rd_task`` partitions the way the UI's "add partition" does."""
        repo = {"repositoryLocationName": location, "repositoryName": REPOSITORY}
        for key in keys:
            result = self(ADD_PARTITION, repo=repo, key=key)["addDynamicPartition"]
            assert result.get("partitionKey") == key, result

    def launch_backfill(
        self, partitions: list[str], assets: tuple[str, ...] = ASSETS, tags: Mapping[str, str] | None = None
    ) -> str:
        """An asset backfill of ``assets`` over ``partitions`` (the UI's "Materialize ... backfill"); ``tags`` go
        on every run it launches."""
        params: dict[str, Any] = {"partitionNames": partitions, "assetSelection": [{"path": [a]} for a in assets]}
        if tags:
            params["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        result = self(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
        assert "backfillId" in result, result
        return result["backfillId"]

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        """Status and runs of a backfill (run tags as a dict)."""
        found = self(BACKFILL, id=backfill_id)["partitionBackfillOrError"]
        runs = [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in found.get("runs") or []]
        return {**found, "runs": runs}


ASSET_NODES = """{
  assetNodes {
    assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
}"""
PARTITIONS = """query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { partitionKeys } }
}"""
RUNS = """query ($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs {
      results { runId jobName assetSelection { path } status creationTime startTime endTime tags { key value } }
    }
  }
}"""
MATERIALIZATIONS = """query ($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: 1000) { partition runId } }
  }
}"""
RUN_EVENTS = """query ($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor) {
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on MessageEvent { message timestamp stepKey }
        ... on AssetCheckEvaluationEvent { evaluation { checkName success partition } }
        ... on MaterializationEvent { assetKey { path } partition }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { error { message } }
      }
    }
    ... on PythonError { message stack }
    ... on RunNotFoundError { message }
  }
}"""
SENSOR = """query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor {
      id
      sensorState { status ticks(limit: 50) { status error { message } runIds skipReason } }
    }
  }
}"""

STOP_SENSOR = """mutation ($id: String!) {
  stopSensor(id: $id) {
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}"""
ADD_PARTITION = """mutation ($repo: RepositorySelector!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: "rd_task", partitionKey: $key) {
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on DuplicateDynamicPartitionError { partitionName }
  }
}"""
LAUNCH_BACKFILL = """mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on UnauthorizedError { message }
  }
}"""
BACKFILL = """query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill {
      id status numPartitions runs { runId status tags { key value } }
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
    }
    ... on PythonError { message }
  }
}"""


@contextlib.contextmanager
def graphql_for(stack: DeployStack) -> Iterator[GraphQL]:
    assert stack.webserver_url is not None, "start the webserver first"
    gql = GraphQL(stack.webserver_url, on_timeout=stack.tails)
    try:
        yield gql
    finally:
        gql.close()
