"""Property tests: whatever graph or bytes a session file holds, reading it returns a result or an RdAssetsError.

Two properties, bounded so the file runs in seconds:

* session-like graphs built in memory from the unpickler's own stand-in classes (a loop whose ``trace.hist`` holds
  (experiment, feedback) pairs), every attribute the reader touches drawn from well-typed values and from hostile
  ones (ints, dicts, text with lone surrogates, 10**5000, nan, stand-ins, deep or shared nesting), go through
  ``hist_of``, ``interpret_trace``, ``anchor_experiment`` and ``resolve_model_weight``;
* arbitrary bytes and genuine fixture pickles with random bytes flipped, inserted or deleted go through
  ``safe_loads`` and then the same readers.

Any document that comes out must also serialise (pydantic JSON and ``json.dumps(allow_nan=False)``).
:data:`EXAMPLES` is the number of examples each property runs; :data:`TOTAL_EXAMPLES` is what a run executes.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import resource
from collections.abc import Iterator
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rd_assets.core.artifacts.weights import resolve_model_weight
from rd_assets.core.contracts.models import SotaFactorExperiment
from rd_assets.core.errors import RdAssetsError
from rd_assets.core.session.unpickler import safe_loads
from rd_assets.core.trace.experiments import (
    FACTOR_EXPERIMENT_CLASSES,
    MODEL_EXPERIMENT_CLASSES,
    anchor_experiment,
    hist_of,
    interpret_trace,
)
from rd_assets_tests.core.trace.test_trace_hostile import HUGE_INT, nested_lists, shared_list_bomb, standin
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec, build_loop, snapshot_bytes

HOSTILE_ONE_IN = 12
"""How often an attribute of a generated graph is drawn from anything at all instead of its well-typed values."""
EXAMPLES = {"graphs": 400, "random_bytes": 1000, "mutated_pickles": 2000}
"""Examples per property (``max_examples``); every one of them runs (no filtering, no assume)."""
TOTAL_EXAMPLES = sum(EXAMPLES.values())
"""3,400 examples per run of this file."""
SCALE = int(os.environ.get("RD_ASSETS_FUZZ_SCALE", "1") or "1")
"""``RD_ASSETS_FUZZ_SCALE=10`` runs ten times the budget with fresh random seeds (a longer fuzzing session);
the suite runs the bounded, reproducible default."""


def fuzz(prop: str) -> settings:
    """Bounded and reproducible: the same :data:`EXAMPLES` every run, nothing written to the example database."""
    return settings(
        max_examples=EXAMPLES[prop] * SCALE,
        deadline=None,
        derandomize=SCALE == 1,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


FACTOR_EXP, QUANT_FACTOR_EXP = sorted(FACTOR_EXPERIMENT_CLASSES)
MODEL_EXP = sorted(MODEL_EXPERIMENT_CLASSES)[0]
FACTOR_TASK = "rdagent.components.coder.factor_coder.factor.FactorTask"
FACTOR_WORKSPACE = "rdagent.components.coder.factor_coder.factor.FactorFBWorkspace"
FEEDBACK = "rdagent.core.proposal.HypothesisFeedback"

# ------------------------------------------------------------------------------------------ values

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())
texts = st.text(st.one_of(st.characters(), surrogates), max_size=12)
names = st.one_of(st.sampled_from(["A_5D", "B_5D", "C_5D", "model.pkl", "factor.py"]), texts)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.builds(lambda: HUGE_INT),  # st.just would repr it, and repr of it raises
    st.floats(),
    texts,
    st.binary(max_size=8),
    st.builds(standin, st.sampled_from(["evil.Thing", FACTOR_TASK, FACTOR_EXP, "pandas.Series"])),
)
data = (
    st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.tuples(inner, inner),
            st.dictionaries(st.one_of(names, scalars), inner, max_size=3),
        ),
        max_leaves=12,
    )
    | st.builds(nested_lists, st.integers(30, 2000))
    | st.builds(shared_list_bomb, st.integers(20, 60))
)


def maybe(good: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any] = data) -> st.SearchStrategy[Any]:
    """The well-typed value, but one draw in :data:`HOSTILE_ONE_IN` anything at all (``hostile``).

    Each of the dozen attributes of a graph is drawn this way, so most graphs get past the first check and
    hostile values still turn up at every depth (records, variables, metrics, workspaces, weights).
    """
    return st.sampled_from([False] * (HOSTILE_ONE_IN - 1) + [True]).flatmap(lambda bad: hostile if bad else good)


code = st.sampled_from(["def calculate_A_5D():\n    return 1\n", "x = '\udc80'\n", "a: 1\n"])
file_dicts = maybe(
    st.dictionaries(
        maybe(st.sampled_from(["factor.py", "model.pkl", "params.pkl", "model.py", "conf.yaml"]) | names, scalars),
        st.one_of(code, texts, st.binary(max_size=8), data),
        max_size=4,
    )
)


@st.composite
def workspaces(draw: st.DrawFn) -> Any:
    return standin(FACTOR_WORKSPACE, file_dict=draw(file_dicts), workspace_path=draw(maybe(texts)))


@st.composite
def tasks(draw: st.DrawFn) -> Any:
    return standin(
        FACTOR_TASK,
        factor_name=draw(maybe(names)),
        description=draw(maybe(texts)),
        variables=draw(maybe(st.dictionaries(names, data, max_size=3))),
    )


GENUINE_SERIES = safe_loads(pickle.dumps(pd.Series({"IC": 0.1, "ICIR": float("nan")}), protocol=4))
results = st.one_of(
    st.none(),
    st.just(GENUINE_SERIES),
    st.dictionaries(st.one_of(names, scalars), data, max_size=4),
    st.builds(lambda mgr: standin("pandas.core.series.Series", _mgr=mgr), data),
    data,
)


@st.composite
def experiments(draw: st.DrawFn, earlier: list[Any]) -> Any:
    based = st.lists(maybe(st.sampled_from(earlier)) if earlier else data, max_size=3)
    return standin(
        draw(st.sampled_from([FACTOR_EXP, FACTOR_EXP, QUANT_FACTOR_EXP, MODEL_EXP, "evil.Experiment"])),
        sub_tasks=draw(maybe(st.lists(maybe(tasks()), min_size=1, max_size=3))),
        sub_workspace_list=draw(maybe(st.lists(maybe(st.none() | workspaces()), max_size=3))),
        based_experiments=draw(maybe(based)),
        experiment_workspace=draw(maybe(workspaces())),
        running_info=standin("rdagent.core.experiment.RunningInfo", result=draw(results)),
        result=draw(results),
        hypothesis=draw(maybe(texts)),
        base_features=draw(maybe(st.dictionaries(names, texts, max_size=3))),
    )


@st.composite
def loops(draw: st.DrawFn) -> Any:
    hist: list[Any] = []
    made: list[Any] = []
    for _ in range(draw(st.integers(0, 4))):
        exp = draw(experiments(made))
        made.append(exp)
        feedback = standin(FEEDBACK, decision=draw(maybe(st.sampled_from([True, True, False]))), reason=draw(texts))
        hist.append(draw(maybe(st.just((exp, feedback)))))
    trace = standin("rdagent.core.proposal.Trace", hist=draw(maybe(st.just(hist))))
    return standin("rdagent.app.qlib_rd_loop.factor.FactorRDLoop", trace=trace, task_run_id=draw(maybe(texts)))


# ------------------------------------------------------------------------------------------ the property


def read_everything(loop: Any) -> None:
    """Every reader on ``loop``: each returns or raises an RdAssetsError, and every document serialises."""
    for reader in (hist_of, read_document, read_weight):
        with contextlib.suppress(RdAssetsError):
            reader(loop)


def read_document(loop: Any) -> None:
    doc = interpret_trace(loop, task_id="t", chosen_snapshot="__session__/0/0_x")
    text = doc.model_dump_json()
    json.dumps(doc.model_dump(mode="json"), allow_nan=False, sort_keys=True).encode("utf-8")
    json.dumps(doc.model_dump(), allow_nan=False, sort_keys=True).encode("utf-8")
    assert SotaFactorExperiment.model_validate_json(text).model_dump_json() == text


def read_weight(loop: Any) -> None:
    hist_index, exp = anchor_experiment(loop)
    resolve_model_weight(exp, hist_index=hist_index)


@fuzz("graphs")
@given(loops())
def test_any_session_graph_reads_to_a_result_or_a_typed_error(loop: Any) -> None:
    read_everything(loop)


# ------------------------------------------------------------------------------------------ bytes


def _genuine_pickle() -> bytes:
    specs = [
        ExperimentSpec(factors=[FactorSpec("A_5D")], metrics={"IC": 0.01}),
        ExperimentSpec(kind="model"),
        ExperimentSpec(factors=[FactorSpec("B_5D"), FactorSpec("C_5D")], weights={"model.pkl": b"\x80\x04N."}),
    ]
    return snapshot_bytes(build_loop(specs), protocol=4)


GENUINE = _genuine_pickle()


@contextlib.contextmanager
def address_space_cap(extra: int = 2 << 30) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``extra`` while a mutated pickle loads.

    A flipped opcode can become ``LONG_BINPUT`` with a 4-byte memo index, and CPython then grows the memo to that
    index (the residual risk :mod:`rd_assets.core.session.unpickler` documents). Under the cap that is a
    ``MemoryError``, not gigabytes of the test machine.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        current = int(statm.read().split()[0]) * resource.getpagesize()
    cap = current + extra if hard == resource.RLIM_INFINITY else min(hard, current + extra)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def load_and_read(data: bytes) -> None:
    """``safe_loads`` then every reader.

    A ``MemoryError`` under the cap is the one untyped outcome allowed: the unpickler leaves it to the isolated
    reader (:mod:`rd_assets.core.isolation`), which reports it as the typed ``ReaderLimitExceededError``.
    """
    try:
        with address_space_cap():
            loop = safe_loads(data)
    except (RdAssetsError, MemoryError):
        return
    read_everything(loop)


@st.composite
def mutated_pickles(draw: st.DrawFn) -> bytes:
    data = bytearray(GENUINE)
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            del data[max(at, 1) :]
    return bytes(data)


@fuzz("random_bytes")
@given(st.binary(max_size=512))
def test_arbitrary_bytes_load_and_read_to_a_result_or_a_typed_error(data: bytes) -> None:
    load_and_read(data)


@fuzz("mutated_pickles")
@given(mutated_pickles())
def test_mutated_genuine_pickles_load_and_read_to_a_result_or_a_typed_error(data: bytes) -> None:
    load_and_read(data)


def test_the_genuine_pickle_reads_to_a_document() -> None:
    """The mutation property starts from a pickle that reads fully, so mutations reach the interpretation."""
    doc = interpret_trace(safe_loads(GENUINE), task_id="t", chosen_snapshot="s")
    assert [f.name for f in doc.sota_factors] == ["A_5D", "B_5D", "C_5D"]
