"""The factor sandbox against hostile factor code, inside real bundles: each attack fails with its reason, nothing
escapes, and the bundle's other factors still compute exactly what they compute alone.

Each variant is the plain sample's bundle with some ``factors/<name>.py`` replaced (and the manifest rehashed, so it
verifies): the code runs as ``factor.py`` the way RD-Agent runs it, in the sandbox of :mod:`rd_assets.consumer.sandbox`.
"""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rd_assets.consumer import SandboxLimits, compute_factors, load_bundle
from rd_assets.consumer.factor_compute import ComputedFactors
from rd_assets.consumer.sandbox import _namespace_prefix, _netns_of_child, probe
from rd_assets.core.contracts.consumer_models import FactorRun
from rd_assets.core.errors import FactorDataError, SandboxUnavailableError
from rd_assets_tests.conftest import PLAIN_TASK
from rd_assets_tests.consumer_testkit import republish_with

LIMITS = SandboxLimits(memory_mb=768, cpu_seconds=1, wall_seconds=5.0, file_mb=64)

READ_INPUT = "import numpy as np, pandas as pd\ndf = pd.read_hdf('daily_pv.h5', key='data')\n"


def code(body: str) -> bytes:
    return textwrap.dedent(body).encode()


@pytest.fixture
def clean(computed: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return computed[PLAIN_TASK]


@pytest.fixture
def run_variant(
    tmp_path: Path, sample_store: Path, market: tuple[Path, pd.DataFrame]
) -> Callable[[dict[str, bytes]], ComputedFactors]:
    """Compute the plain bundle's factors with the given factors' code replaced (by factor name)."""

    def run(replace: dict[str, bytes]) -> ComputedFactors:
        bundle = load_bundle(sample_store / PLAIN_TASK)
        files = {bundle.sota_factors.code_relpaths[name]: data for name, data in replace.items()}
        variant = republish_with(sample_store, PLAIN_TASK, files, into=tmp_path / "variant-store")
        return compute_factors(load_bundle(variant), market[0], limits=LIMITS)

    return run


def runs(result: ComputedFactors) -> dict[str, FactorRun]:
    return {run.name: run for run in result.report.factors}


def assert_others_unharmed(result: ComputedFactors, clean: pd.DataFrame, hostile: set[str]) -> None:
    survivors = [name for name in clean.columns if name not in hostile]
    assert list(result.frame.columns) == survivors and result.report.failed == sorted(hostile, key=list(clean).index)
    for name in survivors:
        assert np.array_equal(result.frame[name].to_numpy(), clean[name].to_numpy(), equal_nan=True), name


def test_no_network_no_writes_or_reads_outside_no_processes(
    tmp_path: Path, sample_store: Path, clean: pd.DataFrame, run_variant: Callable[[dict[str, bytes]], ComputedFactors]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("do not read")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    names = list(clean.columns)
    hostile = {
        names[0]: code(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"),
        names[1]: code(f"open({str(outside / 'pwned.txt')!r}, 'w').write('x')\n"),
        names[2]: code(f"print(open({str(secret)!r}).read())\n"),
        names[3]: code(f"import subprocess\nsubprocess.run(['/bin/sh', '-c', 'touch {outside}/spawned'])\n"),
    }
    result = run_variant(hostile)
    by_name = runs(result)
    for name in hostile:
        assert by_name[name].code == "factor_failed", by_name[name]
    assert "Operation not permitted" in (by_name[names[0]].message or "")  # no socket at all (seccomp)
    assert "Permission denied" in (by_name[names[1]].message or "")  # Landlock: writes only in its cwd
    assert "Permission denied" in (by_name[names[2]].message or "")  # Landlock: reads only libraries and its cwd
    assert "Operation not permitted" in (by_name[names[3]].message or "")  # no new process
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert "do not read" not in str(result.report.model_dump())
    assert_others_unharmed(result, clean, set(hostile))
    facts = result.report.sandbox
    assert facts is not None and facts.network_namespace and facts.pid_namespace and facts.missing == []
    assert facts.landlock_abi and facts.capabilities_dropped
    assert {"socket", "clone", "clone3", "execve", "fork", "io_uring_setup"} <= set(facts.seccomp_denied or [])


def test_limits_end_loops_sleeps_and_memory_hogs(
    clean: pd.DataFrame, run_variant: Callable[[dict[str, bytes]], ComputedFactors]
) -> None:
    names = list(clean.columns)
    hostile = {
        names[0]: code("while True:\n    pass\n"),
        names[1]: code("import time\ntime.sleep(3600)\n"),
        names[2]: code("import numpy as np\nx = np.ones(2 * 1024**3 // 8)\n"),
        names[3]: code("with open('big.bin', 'wb') as fh:\n    fh.write(b'x' * (65 * 1024**2))\n"),
    }
    rows_left_out = code(  # not hostile: RD-Agent code may drop rows; they are kept as NaN and counted
        READ_INPUT + f"r = df[['$close']].rename(columns={{'$close': {names[4]!r}}}).iloc[::2]\n"
        "r.to_hdf('result.h5', key='d')\n"
    )
    by_name = runs(result := run_variant({**hostile, names[4]: rows_left_out}))
    assert by_name[names[0]].code == "factor_cpu_limit", by_name[names[0]]
    assert by_name[names[1]].code == "factor_timeout" and by_name[names[1]].seconds < LIMITS.wall_seconds + 2
    assert by_name[names[2]].code == "factor_memory_limit", by_name[names[2]]
    assert by_name[names[3]].code == "factor_failed" and "File too large" in (by_name[names[3]].message or "")
    assert by_name[names[4]].ok and by_name[names[4]].missing_rows == len(clean) // 2
    assert list(result.frame.columns) == [names[4]] and result.frame[names[4]].isna().sum() == len(clean) // 2


def test_garbage_outputs_are_refused_with_their_reason(
    tmp_path: Path, clean: pd.DataFrame, run_variant: Callable[[dict[str, bytes]], ComputedFactors]
) -> None:
    names = list(clean.columns)
    marker = tmp_path / "unpickled"
    hostile = {
        names[0]: code(
            READ_INPUT + "df[['$close']].rename(columns={'$close': 'wrong'}).to_hdf('result.h5', key='d')\n"
        ),
        names[1]: code(
            READ_INPUT + f"r = df[['$close']].rename(columns={{'$close': {names[1]!r}}})\n"
            "r.index = r.index.set_levels(r.index.levels[0] + pd.Timedelta(days=1000), level=0)\n"
            "r.to_hdf('result.h5', key='d')\n"
        ),
        names[2]: code(
            READ_INPUT + f"r = df[['$close']].rename(columns={{'$close': {names[2]!r}}})\n"
            "r.iloc[3, 0] = np.inf\nr.to_hdf('result.h5', key='d')\n"
        ),
        names[3]: code(
            "import os, pandas as pd\n"
            f"class Boom:\n    def __reduce__(self):\n        return (os.system, ('touch {marker}',))\n"
            f"df = pd.read_hdf('daily_pv.h5', key='data')\n"
            f"pd.DataFrame({{{names[3]!r}: [Boom()] * len(df)}}, index=df.index).to_hdf('result.h5', key='d')\n"
        ),
        names[4]: code("print('I compute nothing')\n"),
    }
    by_name = runs(result := run_variant(hostile))
    assert by_name[names[0]].code == "factor_output_invalid" and "expected ['" in (by_name[names[0]].message or "")
    assert by_name[names[1]].code == "factor_output_invalid" and "not in the input" in (by_name[names[1]].message or "")
    assert by_name[names[2]].code == "factor_output_invalid" and "1 infinite" in (by_name[names[2]].message or "")
    assert by_name[names[3]].code == "factor_output_invalid" and "dtype object" in (by_name[names[3]].message or "")
    assert by_name[names[4]].code == "factor_no_output" and "I compute nothing" in (by_name[names[4]].output_tail or "")
    assert not marker.exists()
    assert result.frame.columns.empty and not result.report.ok


def test_the_sandbox_has_its_own_network_namespace() -> None:
    prefix, runner, why = _namespace_prefix()
    assert prefix is not None, why
    child, why = _netns_of_child(prefix)
    assert child is not None, why
    assert child != Path("/proc/self/ns/net").readlink().as_posix() and runner in ("root", "user_namespace")


def test_without_namespaces_nothing_runs_unless_a_weaker_sandbox_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: on a machine without ``unshare`` compute-factors refuses, naming what is missing."""
    monkeypatch.setattr("rd_assets.consumer.sandbox.shutil.which", lambda *a, **k: None)
    with pytest.raises(SandboxUnavailableError, match="unshare"):
        probe(LIMITS)
    weaker = probe(LIMITS, require_confinement=False)
    assert weaker.prefix == () and not weaker.facts.network_namespace and weaker.facts.missing


def test_input_data_is_checked(tmp_path: Path, sample_store: Path, market: tuple[Path, pd.DataFrame]) -> None:
    bundle = load_bundle(sample_store / PLAIN_TASK)
    wrong_key = tmp_path / "wrong.h5"
    market[1].to_hdf(wrong_key, key="prices")
    with pytest.raises(FactorDataError, match="key 'data'"):
        compute_factors(bundle, wrong_key)
    flat = tmp_path / "flat.h5"
    market[1].reset_index().to_hdf(flat, key="data")
    with pytest.raises(FactorDataError, match="indexed by"):
        compute_factors(bundle, flat)
