"""Realistic RD-Agent task log dirs, written without rdagent, for tests and benchmarks.

Why: the reader must be proven on pickles whose globals are the genuine rdagent class paths
(``rdagent.scenarios.qlib.experiment.factor_experiment.QlibFactorExperiment`` ...), in shapes the two shared
samples do not cover (resumed runs, ties, truncated files, Windows paths, legacy attributes ...).

How: every rdagent class is a tiny stand-in class defined here whose ``__module__``/``__qualname__`` are the
genuine path. While pickling, :func:`genuine_modules` registers throwaway ``sys.modules`` entries (and
temporary attributes on ``__main__`` / ``__mp_main__``) so :mod:`pickle` can name them; outside that context
nothing of rdagent is importable, exactly like on a consumer machine.

Typical use::

    hist = [
        ExperimentSpec(factors=[FactorSpec("Mom_10D")], decision=True, weights={"model.pkl": b"..."}),
        ExperimentSpec(kind="model", decision=True),
        ExperimentSpec(factors=[FactorSpec("Vol_5D"), FactorSpec("Mom_10D")], decision=False),
    ]
    log_dir = write_task(tmp_path / "log", "2026-01-09_16-11-14-215581", loop_timeline([0, 1, 2, 3]), hist=hist)

Knobs: ``Snap(..., truncate_to=N | raw=b"")`` for damaged files, ``signing_key=`` for rdagent 1.0's signed
format, ``ExperimentSpec.padding_bytes`` / ``Snap.padding_bytes`` / ``build_loop(padding_bytes=)`` and
``weights={"model.pkl": opaque_bytes(5 << 20)}`` for benchmark-sized snapshots, and
:func:`write_combined_factors_parquet` for the anchor's training parquet (map ``WSL_WORKSPACE_PREFIX`` to a
local folder and use :func:`workspace_dir`).

The objects :func:`build_loop` makes share identity like rdagent's (``based_experiments`` holds the very
experiment objects of ``trace.hist``), so the pickle memo reproduces the genuine layout.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib.util
import io
import operator
import pathlib
import pickle
import random
import sys
import types
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any, Literal

# ------------------------------------------------------------------------------------------------ class paths

FACTOR_LOOP = "rdagent.app.qlib_rd_loop.factor.FactorRDLoop"
QUANT_LOOP = "rdagent.app.qlib_rd_loop.quant.QuantRDLoop"
MODEL_LOOP = "rdagent.app.qlib_rd_loop.model.ModelRDLoop"
MAIN_FACTOR_LOOP = "__main__.FactorRDLoop"
MP_MAIN_FACTOR_LOOP = "__mp_main__.FactorRDLoop"

TRACE = "rdagent.core.proposal.Trace"
QUANT_TRACE = "rdagent.scenarios.qlib.proposal.quant_proposal.QuantTrace"
HYPOTHESIS = "rdagent.core.proposal.Hypothesis"
FEEDBACK = "rdagent.core.proposal.HypothesisFeedback"
RUNNING_INFO = "rdagent.core.experiment.RunningInfo"
FACTOR_TASK = "rdagent.components.coder.factor_coder.factor.FactorTask"
FACTOR_WORKSPACE = "rdagent.components.coder.factor_coder.factor.FactorFBWorkspace"
MODEL_TASK = "rdagent.components.coder.model_coder.model.ModelTask"
MODEL_WORKSPACE = "rdagent.components.coder.model_coder.model.ModelFBWorkspace"
QLIB_WORKSPACE = "rdagent.scenarios.qlib.experiment.workspace.QlibFBWorkspace"
KNOWLEDGE_BASE = "rdagent.components.coder.CoSTEER.knowledge_management.CoSTEERKnowledgeBaseV2"
FACTOR_CODER = "rdagent.components.coder.factor_coder.FactorCoSTEER"
EVO_AGENT = "rdagent.core.evolving_agent.RAGEvoAgent"
EVOLVING_ITEM = "rdagent.components.coder.CoSTEER.evolvable_subjects.EvolvingItem"
LOOP_TRACE = "rdagent.utils.workflow.loop.LoopTrace"
_EXPERIMENT_PACKAGE = "rdagent.scenarios.qlib.experiment"

ExperimentModule = Literal["factor_experiment", "quant_experiment", "model_experiment"]

WSL_WORKSPACE_PREFIX = "/mnt/f/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace"
"""Where the shared samples' workspaces live (a WSL run); map it to a local folder to find parquet files."""
WINDOWS_WORKSPACE_PREFIX = "F:/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace"

SIGNED_MAGIC = b"RDAGENT_SIGNED_PICKLE_V1\n"
FACTOR_STEPS: tuple[str, ...] = ("direct_exp_gen", "coding", "running", "feedback")
"""Step files of the qlib factor loop; rdagent 1.0 adds ``record`` (see :data:`RDAGENT_1_STEPS`)."""
RDAGENT_1_STEPS: tuple[str, ...] = (*FACTOR_STEPS, "record")


class _Genuine:
    """Base of the stand-in classes: plain attribute bags that pickle like rdagent objects (NEWOBJ + dict)."""

    def __repr__(self) -> str:
        return f"<fixture {type(self).__module__}.{type(self).__qualname__}>"

    def __class_getitem__(cls, key: Any) -> types.GenericAlias:
        """Generic like rdagent's classes, so a naive ``pickle.loads`` can rebuild ``__orig_class__``."""
        return types.GenericAlias(cls, key)


_CLASSES: dict[str, type[_Genuine]] = {}


def genuine_class(path: str) -> type[_Genuine]:
    """The stand-in class for ``module.Class`` (created once; pickles under exactly that path)."""
    cls = _CLASSES.get(path)
    if cls is None:
        module, _, name = path.rpartition(".")
        cls = type(name, (_Genuine,), {"__module__": module, "__qualname__": name})
        _CLASSES[path] = cls
    return cls


def make(path: str, **attrs: Any) -> _Genuine:
    """An instance of the genuine class ``path`` whose pickled state is exactly ``attrs``."""
    obj = genuine_class(path)()
    obj.__dict__.update(attrs)
    return obj


_MAIN_MODULES = frozenset({"__main__", "__mp_main__"})


_THROWAWAY: set[str] = set()
"""Module names currently registered by :func:`genuine_modules` (contexts may nest)."""


@functools.cache
def _importable(top: str) -> bool:
    return importlib.util.find_spec(top) is not None


def _registrable(module_name: str) -> bool:
    """A package that exists for real (imported or importable) is never shadowed by throwaway modules."""
    top = module_name.partition(".")[0]
    if module_name in _MAIN_MODULES or top in _THROWAWAY:
        return True
    return top not in sys.modules and not _importable(top)


@contextmanager
def genuine_modules() -> Iterator[None]:
    """Make the stand-in classes of rdagent (and ``__main__``/``__mp_main__``) importable, only inside the block.

    Missing modules become throwaway ``types.ModuleType`` entries (removed afterwards); ``__main__`` gets
    temporary attributes (restored afterwards). Classes of packages that really exist (``pandas...`` fakes
    used to model undecodable objects) are never registered: :func:`snapshot_bytes` names those itself.
    Not thread-safe: pickle in one thread at a time. Also useful to emulate "rdagent installed" for a
    naive ``pickle.load`` baseline (benchmarks).
    """
    created: list[str] = []
    restored: list[tuple[types.ModuleType, str, Any]] = []
    missing = object()
    try:
        for path, cls in list(_CLASSES.items()):
            module_name, _, name = path.rpartition(".")
            if not _registrable(module_name):
                continue
            parts = module_name.split(".")
            for depth in range(1, len(parts) + 1):  # pickle imports the top-level package first
                package = ".".join(parts[:depth])
                if package not in sys.modules:
                    sys.modules[package] = types.ModuleType(package)
                    _THROWAWAY.add(package)
                    created.append(package)
            module = sys.modules[module_name]
            restored.append((module, name, getattr(module, name, missing)))
            setattr(module, name, cls)
        yield
    finally:
        for module, name, previous in reversed(restored):
            if previous is missing:
                if hasattr(module, name):
                    delattr(module, name)
            else:
                setattr(module, name, previous)
        for module_name in reversed(created):
            sys.modules.pop(module_name, None)
            _THROWAWAY.discard(module_name)


class _GenuinePickler(pickle._Pickler):  # type: ignore[misc,name-defined]
    """Pure-Python pickler that writes a stand-in class as its genuine global without looking it up.

    Only needed when the graph holds a fake class of a package that really exists (e.g. a broken
    ``pandas.core.series.Series``) next to real objects of that package.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if not (isinstance(obj, type) and issubclass(obj, _Genuine)):
            super().save_global(obj, name)
            return
        if self.proto >= 4:
            self.save(obj.__module__)
            self.save(obj.__qualname__)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.__module__}\n{obj.__qualname__}\n".encode())
        self.memoize(obj)


def _dumps(obj: Any, protocol: int) -> bytes:
    with genuine_modules():
        try:
            return pickle.dumps(obj, protocol=protocol)
        except pickle.PicklingError:
            buffer = io.BytesIO()
            _GenuinePickler(buffer, protocol=protocol).dump(obj)
            return buffer.getvalue()


class _Subscript:
    """``Generic[Arg]`` as rdagent objects carry it in ``__orig_class__``: pickled as ``_operator.getitem``."""

    def __init__(self, origin: str, key: str) -> None:
        self.origin, self.key = genuine_class(origin), genuine_class(key)

    def __reduce__(self) -> tuple[Any, tuple[type, type]]:
        return operator.getitem, (self.origin, self.key)


def _generic_list(item: str) -> Any:
    """``list[Item]`` (a ``types.GenericAlias``), the default factory of rdagent's ``loop_trace``."""
    return list[genuine_class(item)]  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ paths


class _PickledPath:
    """Pickles as a concrete ``pathlib.PosixPath`` / ``pathlib.WindowsPath``, like the path rdagent stored.

    ``pathlib.WindowsPath`` cannot be instantiated on Linux, so the reduce tuple names the class directly.
    """

    def __init__(self, path: PurePath) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, ...]]:
        cls = pathlib.WindowsPath if isinstance(self.path, PureWindowsPath) else pathlib.PosixPath
        return cls, tuple(self.path.parts)  # like pathlib itself: ('F:\\', 'Dev', ...) / ('/', 'mnt', ...)


def pickled_path(value: str | PurePath | None) -> Any:
    """A workspace path as rdagent stores it: ``str`` stays ``str``; pure paths become concrete path classes."""
    if value is None or isinstance(value, str):
        return value
    return _PickledPath(value)


# ------------------------------------------------------------------------------------------------ YAML texts

ALPHA158_20: tuple[tuple[str, str], ...] = (
    ("Resi($close, 5)/$close", "RESI5"),
    (
        "Std(Abs($close/Ref($close, 1)-1)*$volume, 5)/(Mean(Abs($close/Ref($close, 1)-1)*$volume, 5)+1e-12)",
        "WVMA5",
    ),
    ("Rsquare($close, 5)", "RSQR5"),
    ("($high-$low)/$open", "KLEN"),
    ("Rsquare($close, 10)", "RSQR10"),
    ("Corr($close, Log($volume+1), 5)", "CORR5"),
    ("Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), 5)", "CORD5"),
    ("Corr($close, Log($volume+1), 10)", "CORR10"),
    ("Ref($close, 60)/$close", "ROC60"),
    ("Resi($close, 10)/$close", "RESI10"),
    ("Std($volume, 5)/($volume+1e-12)", "VSTD5"),
    ("Rsquare($close, 60)", "RSQR60"),
    ("Corr($close, Log($volume+1), 60)", "CORR60"),
    (
        "Std(Abs($close/Ref($close, 1)-1)*$volume, 60)/(Mean(Abs($close/Ref($close, 1)-1)*$volume, 60)+1e-12)",
        "WVMA60",
    ),
    ("Std($close, 5)/$close", "STD5"),
    ("Rsquare($close, 20)", "RSQR20"),
    ("Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), 60)", "CORD60"),
    ("Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), 10)", "CORD10"),
    ("Corr($close, Log($volume+1), 20)", "CORR20"),
    ("(Less($open, $close)-$low)/$open", "KLOW"),
)
"""The 20 Alpha158 (expression, name) pairs of the fork's rendered configs, in the samples' order."""

_YAML_HEAD = """qlib_init:
    provider_uri: "~/.qlib/qlib_data/cn_data"
    region: cn

market: &market csi300
benchmark: &benchmark SH000300

data_handler_config: &data_handler_config
    start_time: 2008-01-01
    end_time: 2020-08-01
    instruments: *market
    data_loader:
"""

_YAML_PROCESSORS = """    infer_processors:
        - class: RobustZScoreNorm
          kwargs:
              fields_group: feature
              clip_outlier: true
              fit_start_time: 2008-01-01
              fit_end_time: 2014-12-31
        - class: Fillna
          kwargs:
              fields_group: feature
    learn_processors:
        - class: DropnaLabel
        - class: CSZScoreNorm
          kwargs:
              fields_group: label
"""

_YAML_TAIL = """
port_analysis_config: &port_analysis_config
    strategy:
        class: TopkDropoutStrategy
        module_path: qlib.contrib.strategy
        kwargs:
            signal: <PRED>
            topk: 50
            n_drop: 5
    backtest:
        start_time: 2017-01-01
        end_time: 2020-08-01
        account: 100000000
        benchmark: *benchmark
        exchange_kwargs:
            limit_threshold: 0.095
            deal_price: close
            open_cost: 0.0005
            close_cost: 0.0015
            min_cost: 5

task:
    model:
        class: LGBModel
        module_path: qlib.contrib.model.gbdt
        kwargs:
            loss: mse
            colsample_bytree: 0.8879
            learning_rate: 0.2
            subsample: 0.8789
            lambda_l1: 205.6999
            lambda_l2: 580.9768
            max_depth: 8
            num_leaves: 210
            num_threads: 20
    dataset:
        class: DatasetH
        module_path: qlib.data.dataset
        kwargs:
            handler:
                class: DataHandlerLP
                module_path: qlib.data.dataset.handler
                kwargs: *data_handler_config
            segments:
                train: [2008-01-01, 2014-12-31]
                valid: [2015-01-01, 2016-12-31]
                test: [2017-01-01, 2020-08-01]
    record:
        - class: SignalRecord
          module_path: qlib.workflow.record_temp
          kwargs:
              model: <MODEL>
              dataset: <DATASET>
        - class: SigAnaRecord
          module_path: qlib.workflow.record_temp
          kwargs:
              ana_long_short: false
              ann_scaler: 252
        - class: PortAnaRecord
          module_path: qlib.workflow.record_temp
          kwargs:
              config: *port_analysis_config
"""

_JINJA_TEMPLATE = """qlib_init:
    provider_uri: "~/.qlib/qlib_data/cn_data"
    region: cn

data_handler_config: &data_handler_config
    start_time: {{ train_start | default("2008-01-01", true) }}
    end_time: {{ test_end | default("null", true) }}
    data_loader:
        class: NestedDataLoader
        kwargs:
            dataloader_l:
                - class: qlib.contrib.data.loader.Alpha158DL
                  kwargs:
                    config:
                        feature:
                            - {{ feature_expressions }}
                            - {{ feature_names }}
                - class: qlib.data.dataset.loader.StaticDataLoader
                  kwargs:
                    config: "combined_factors_df.parquet"
task:
    model:
        class: %(model_class)s
        kwargs:
            n_epochs: {{ n_epochs }}
"""


def _feature_pair(alpha158: Sequence[tuple[str, str]], indent: str) -> str:
    exprs = ", ".join(f'"{e}"' for e, _ in alpha158)
    names = ", ".join(f'"{n}"' for _, n in alpha158)
    return f"{indent}- [{exprs}]\n{indent}- [{names}]\n"


def _label_and_features(alpha158: Sequence[tuple[str, str]], indent: str) -> str:
    return (
        f"{indent[:-4]}label:\n"
        f'{indent}- ["Ref($close, -2)/Ref($close, -1) - 1"]\n'
        f'{indent}- ["LABEL0"]\n'
        f"{indent[:-4]}feature:\n" + _feature_pair(alpha158, indent)
    )


def dynamic_yaml(alpha158: Sequence[tuple[str, str]] = ALPHA158_20) -> str:
    """The fork's rendered ``conf_combined_factors_dynamic.yaml``: Alpha158 names listed literally + the parquet."""
    return (
        "# LightGBM on the RD-Agent Alpha158 base features joined (left) with the dynamic factors\n"
        "# (combined_factors_df.parquet in this workspace, columns ('feature', <factor name>)).\n"
        + _YAML_HEAD
        + "        class: CombinedAlpha158DynamicFactorsLoader\n"
        "        module_path: rdagent.scenarios.qlib.experiment.custom_loaders\n"
        "        kwargs:\n"
        "            alpha158_config:\n"
        + _label_and_features(alpha158, " " * 20)
        + "            dynamic_path: combined_factors_df.parquet\n"
        "            join: left\n" + _YAML_PROCESSORS + _YAML_TAIL
    )


def baseline_yaml(alpha158: Sequence[tuple[str, str]] = ALPHA158_20) -> str:
    """The rendered ``conf_baseline.yaml``: Alpha158 only."""
    return (
        "# Baseline: LightGBM on the RD-Agent Alpha158 base features only.\n"
        + _YAML_HEAD
        + "        class: Alpha158DL\n"
        "        module_path: qlib.contrib.data.loader\n"
        "        kwargs:\n"
        "            config:\n" + _label_and_features(alpha158, " " * 20) + _YAML_PROCESSORS + _YAML_TAIL
    )


def default_yaml_files(alpha158: Sequence[tuple[str, str]] = ALPHA158_20) -> dict[str, str]:
    """``experiment_workspace.file_dict`` of a fork factor experiment: rendered configs + Jinja templates."""
    return {
        "conf_combined_factors.yaml": _JINJA_TEMPLATE % {"model_class": "LGBModel"},
        "read_exp_res.py": "import qlib\nfrom mlflow.tracking import MlflowClient\n",
        "conf_combined_factors_sota_model.yaml": _JINJA_TEMPLATE % {"model_class": "GeneralPTNN"},
        "README.md": "# Qlib factor template\n",
        "conf_baseline.yaml": baseline_yaml(alpha158),
        "conf_combined_factors_dynamic.yaml": dynamic_yaml(alpha158),
    }


# ------------------------------------------------------------------------------------------------ specs


@dataclass
class FactorSpec:
    """One factor sub_task and the code of its paired sub-workspace."""

    name: str
    description: str | None = None
    formulation: str | None = None
    variables: dict[str, str] | None = None
    code: str | None = None
    """``factor.py`` text; default: a generated module defining ``calculate_<name>()``."""
    legacy_description: bool = False
    """Store the description as ``factor_description`` (older rdagent) instead of ``description``."""

    def resolved_description(self) -> str:
        return self.description if self.description is not None else f"Description of {self.name}."

    def resolved_formulation(self) -> str:
        return self.formulation if self.formulation is not None else f"{self.name} = f(close)"

    def resolved_variables(self) -> dict[str, str]:
        return self.variables if self.variables is not None else {"close": "close price"}

    def factor_py(self) -> str:
        if self.code is not None:
            return self.code
        return (
            "import pandas as pd\n\n\n"
            f"def calculate_{self.name}():\n"
            '    df = pd.read_hdf("daily_pv.h5", key="data")\n'
            f'    result = df["$close"].pct_change().to_frame("{self.name}")\n'
            '    result.to_hdf("result.h5", key="data")\n\n\n'
            'if __name__ == "__main__":\n'
            f"    calculate_{self.name}()\n"
        )


_UNSET: Any = object()


@dataclass
class ExperimentSpec:
    """One ``trace.hist`` entry: an experiment and the decision of its feedback."""

    kind: Literal["factor", "model"] = "factor"
    factors: list[FactorSpec] = field(default_factory=list)
    decision: bool | None = True
    weights: dict[str, bytes] | None = None
    """Added to ``sub_workspace_list[0].file_dict`` (e.g. ``{"model.pkl": data}``)."""
    none_workspaces: set[int] = field(default_factory=set)
    """Indices of ``sub_workspace_list`` that are ``None`` (coding failed for that sub_task)."""
    metrics: dict[str, float] | None = None
    """Stored as a real ``pandas.Series`` pickled by the installed pandas."""
    raw_result: Any = _UNSET
    """Stored as the result object verbatim instead of ``metrics`` (e.g. an undecodable object)."""
    legacy_result: bool = False
    """Store the result as the experiment's ``result`` attribute (older rdagent) instead of ``running_info``."""
    module: ExperimentModule | None = None
    """Module of the experiment class; default ``factor_experiment`` / ``model_experiment`` by kind."""
    workspace_path: str | PurePath | None = None
    """``experiment_workspace.workspace_path``; default ``WSL_WORKSPACE_PREFIX/<workspace_hex>``."""
    workspace_hex: str | None = None
    """Folder name of the default workspace path; default derived from the hist position."""
    yaml_files: dict[str, str] | None = None
    """``experiment_workspace.file_dict``; default :func:`default_yaml_files` for factor experiments."""
    padding_bytes: int = 0
    """Size of an opaque blob stored as the workspace checkpoint (``ws_ckp``), to make big snapshots."""
    hypothesis: str | None = None
    base_features: dict[str, str] | None = None
    """rdagent 1.0's ``exp.base_features`` (alpha names -> expressions); absent when ``None``."""
    no_based: bool = False
    """``based_experiments == []`` (the placeholder's own baseline run) instead of placeholder + accepted."""

    def class_path(self) -> str:
        module = self.module or ("factor_experiment" if self.kind == "factor" else "model_experiment")
        name = "QlibFactorExperiment" if self.kind == "factor" else "QlibModelExperiment"
        return f"{_EXPERIMENT_PACKAGE}.{module}.{name}"

    def hex_for(self, position: int) -> str:
        return self.workspace_hex or hashlib.md5(f"workspace-{position}".encode()).hexdigest()

    def resolved_workspace_path(self, position: int) -> str | PurePath:
        if self.workspace_path is not None:
            return self.workspace_path
        return PurePosixPath(WSL_WORKSPACE_PREFIX) / self.hex_for(position)


def opaque_bytes(size: int, seed: int = 0) -> bytes:
    """Incompressible, deterministic bytes (benchmarks must not profit from trivially compressible data)."""
    return random.Random(seed).randbytes(size) if size > 0 else b""


def _series(metrics: dict[str, float]) -> Any:
    import pandas as pd

    return pd.Series(metrics, dtype="float64")


def _result_object(spec: ExperimentSpec) -> Any:
    if spec.raw_result is not _UNSET:
        return spec.raw_result
    return None if spec.metrics is None else _series(spec.metrics)


def _factor_experiment_parts(spec: ExperimentSpec, position: int) -> tuple[list[Any], list[Any]]:
    tasks, workspaces = [], []
    for j, factor in enumerate(spec.factors):
        description_key = "factor_description" if factor.legacy_description else "description"
        task = make(
            FACTOR_TASK,
            factor_name=factor.name,
            factor_formulation=factor.resolved_formulation(),
            variables=factor.resolved_variables(),
            factor_resources=None,
            factor_implementation=False,
            version=1,
            name=factor.name,
            **{description_key: factor.resolved_description()},
        )
        tasks.append(task)
        if j in spec.none_workspaces:
            workspaces.append(None)
            continue
        files: dict[str, Any] = {"factor.py": factor.factor_py()}
        workspaces.append(
            make(
                FACTOR_WORKSPACE,
                target_task=task,
                feedback=None,
                running_info=make(RUNNING_INFO, result=None, running_time=None),
                file_dict=files,
                workspace_path=pickled_path(PurePosixPath(WSL_WORKSPACE_PREFIX) / f"{spec.hex_for(position)}{j:02d}"),
                ws_ckp=None,
                change_summary=None,
                raise_exception=False,
            )
        )
    return tasks, workspaces


def _model_experiment_parts(spec: ExperimentSpec, position: int) -> tuple[list[Any], list[Any]]:
    task = make(
        MODEL_TASK,
        name=f"Model_{position}",
        description="A small MLP on the Alpha158 features.",
        formulation="y = MLP(x)",
        architecture="2 x Linear",
        variables={},
        hyperparameters={"n_epochs": 10},
        training_hyperparameters={},
        model_type="Tabular",
        version=1,
    )
    workspace = make(
        MODEL_WORKSPACE,
        target_task=task,
        feedback=None,
        running_info=make(RUNNING_INFO, result=None, running_time=None),
        file_dict={"model.py": "import torch\n\nmodel_cls = torch.nn.Linear\n"},
        workspace_path=pickled_path(PurePosixPath(WSL_WORKSPACE_PREFIX) / f"{spec.hex_for(position)}m"),
        ws_ckp=None,
        change_summary=None,
    )
    return [task], [None if 0 in spec.none_workspaces else workspace]


def build_experiment(spec: ExperimentSpec, *, position: int, based_experiments: list[Any]) -> Any:
    """One experiment object (``position`` is its hist index; it only seeds default names/paths)."""
    if spec.kind == "factor":
        tasks, workspaces = _factor_experiment_parts(spec, position)
        yaml_files = default_yaml_files() if spec.yaml_files is None else dict(spec.yaml_files)
    else:
        tasks, workspaces = _model_experiment_parts(spec, position)
        yaml_files = {"model.py": "import torch\n"} if spec.yaml_files is None else dict(spec.yaml_files)
    if spec.weights and workspaces and workspaces[0] is not None:
        workspaces[0].__dict__["file_dict"].update(spec.weights)
    result = _result_object(spec)
    experiment_workspace = make(
        QLIB_WORKSPACE,
        target_task=None,
        feedback=None,
        running_info=make(RUNNING_INFO, result=None, running_time=None),
        file_dict=yaml_files,
        workspace_path=pickled_path(spec.resolved_workspace_path(position)),
        ws_ckp=opaque_bytes(spec.padding_bytes, position) or None,
        change_summary=None,
    )
    hypothesis = make(
        HYPOTHESIS,
        hypothesis=spec.hypothesis or f"Loop {position}: {', '.join(f.name for f in spec.factors) or spec.kind}.",
        reason="Price/volume patterns have documented predictive power.",
        concise_reason="",
        concise_observation="",
        concise_justification="",
        concise_knowledge="",
    )
    attrs: dict[str, Any] = {
        "hypothesis": hypothesis,
        "sub_tasks": tasks,
        "sub_workspace_list": workspaces,
        "based_experiments": based_experiments,
        "experiment_workspace": experiment_workspace,
        "prop_dev_feedback": None,
        "sub_results": {},
        "stdout": "",
    }
    if spec.base_features is not None:
        attrs["base_features"] = dict(spec.base_features)
    if spec.legacy_result:
        attrs["result"] = result
    else:
        attrs["running_info"] = make(RUNNING_INFO, result=result, running_time=None)
    return make(spec.class_path(), **attrs)


def placeholder_experiment() -> Any:
    """``QlibFactorExperiment(sub_tasks=[])``: the first entry of every ``based_experiments``."""
    return make(
        ExperimentSpec(kind="factor").class_path(),
        hypothesis=None,
        sub_tasks=[],
        sub_workspace_list=[],
        based_experiments=[],
        experiment_workspace=make(QLIB_WORKSPACE, file_dict=default_yaml_files(), workspace_path=None),
        prop_dev_feedback=None,
        running_info=make(RUNNING_INFO, result=None, running_time=None),
        sub_results={},
        stdout="",
    )


def build_feedback(decision: bool | None) -> Any:
    return make(
        FEEDBACK,
        decision=decision,
        eda_improvement=None,
        reason="New factors improve IC over SOTA." if decision else "No improvement over SOTA.",
        exception=None,
        code_change_summary="",
        observations="IC=0.03",
        hypothesis_evaluation="The hypothesis is supported." if decision else "Not supported.",
        new_hypothesis="Try longer windows.",
        acceptable=None,
    )


def build_hist(hist_specs: Sequence[ExperimentSpec]) -> list[tuple[Any, Any]]:
    """``trace.hist`` built like rdagent: each proposal's ``based_experiments`` = placeholder + every
    accepted (decision True) experiment already in hist, factor and model alike, as the same objects."""
    hist: list[tuple[Any, Any]] = []
    for position, spec in enumerate(hist_specs):
        based = [placeholder_experiment()] + [exp for exp, fb in hist if fb.__dict__["decision"] is True]
        based = [] if spec.no_based else based
        hist.append((build_experiment(spec, position=position, based_experiments=based), build_feedback(spec.decision)))
    return hist


def build_loop(
    hist_specs: Sequence[ExperimentSpec] | list[tuple[Any, Any]],
    *,
    loop_path: str = FACTOR_LOOP,
    task_run_id: str | None = None,
    loop_idx: int | None = None,
    padding_bytes: int = 0,
) -> Any:
    """A loop object (the pickle root of a snapshot) whose ``trace.hist`` holds ``hist_specs``.

    ``hist_specs`` may also be an already built hist (from :func:`build_hist`), e.g. to pickle prefixes of one
    timeline. ``padding_bytes`` go into the coder's knowledge base, where real snapshots carry most of their bulk.
    """
    hist = build_hist(hist_specs) if all(isinstance(s, ExperimentSpec) for s in hist_specs) else list(hist_specs)
    trace_path = QUANT_TRACE if loop_path.endswith("QuantRDLoop") else TRACE
    trace = make(
        trace_path,
        scen=None,
        hist=hist,
        dag_parent=[],
        idx2loop_id={},
        knowledge_base=None,
        current_selection=(-1,),
    )
    n = len(hist) if loop_idx is None else loop_idx
    attrs: dict[str, Any] = {
        "coder": make(
            FACTOR_CODER,
            knowledge_base=make(KNOWLEDGE_BASE, blob=opaque_bytes(padding_bytes, n) or None),
            evolve_agent=make(EVO_AGENT, __orig_class__=_Subscript(EVO_AGENT, EVOLVING_ITEM), evolving_trace=[]),
        ),
        "plan": {"features": {name: expr for expr, name in ALPHA158_20}},
        "trace": trace,
        "loop_idx": n,
        "step_idx": defaultdict(int, {i: 3 for i in range(n)}),
        "loop_prev_out": defaultdict(dict),
        "loop_trace": defaultdict(_generic_list(LOOP_TRACE), {i: [make(LOOP_TRACE)] for i in range(n)}),
        "session_folder": pickled_path(PurePosixPath("/mnt/f/Dev/RD-Agent-main/log/task/__session__")),
        "loop_n": None,
        "step_n": None,
    }
    if task_run_id is not None:
        attrs["task_run_id"] = task_run_id
    return make(loop_path, **attrs)


# ------------------------------------------------------------------------------------------------ files


def snapshot_bytes(obj: Any, *, protocol: int = 4, signing_key: str | None = None) -> bytes:
    """Plain pickle, or rdagent 1.0's signed format (magic + HMAC-SHA256(sha256(key)) + protocol-5 pickle)."""
    body = _dumps(obj, 5 if signing_key is not None else protocol)
    if signing_key is None:
        return body
    mac = hmac.new(hashlib.sha256(signing_key.encode()).digest(), body, hashlib.sha256).digest()
    return SIGNED_MAGIC + mac + body


def write_snapshot(path: Path, obj: Any, *, protocol: int = 4, signing_key: str | None = None) -> Path:
    """Write one session file (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(snapshot_bytes(obj, protocol=protocol, signing_key=signing_key))
    return path


@dataclass(frozen=True)
class Snap:
    """One snapshot file of a timeline: ``__session__/<loop_idx>/<step_idx>_<step_name>`` with ``hist[:hist_len]``.

    ``truncate_to`` keeps only that many bytes (a file cut by a crash); ``raw`` writes these bytes verbatim
    (``b""`` = empty file); ``hist`` overrides the task-wide hist specs for this file (a diverging timeline).
    """

    loop_idx: int
    step_idx: int
    step_name: str
    hist_len: int
    truncate_to: int | None = None
    raw: bytes | None = None
    hist: tuple[ExperimentSpec, ...] | None = None
    padding_bytes: int = 0

    @property
    def relpath(self) -> str:
        return f"__session__/{self.loop_idx}/{self.step_idx}_{self.step_name}"


TimelineEntry = Snap | tuple[int, int, str, int]


def loop_timeline(hist_len_per_loop: Sequence[int], steps: Sequence[str] = FACTOR_STEPS) -> list[Snap]:
    """Every step of every loop folder, each holding the given hist length (e.g. ``[0, 0, 3, 3, 2, 2]``)."""
    return [
        Snap(loop_idx, step_idx, name, hist_len)
        for loop_idx, hist_len in enumerate(hist_len_per_loop)
        for step_idx, name in enumerate(steps)
    ]


def growing_timeline(n_loops: int, steps: Sequence[str] = FACTOR_STEPS) -> list[Snap]:
    """How a healthy run looks: hist grows by one in the last step of each loop (feedback / record)."""
    return [
        Snap(loop_idx, step_idx, name, loop_idx + (1 if step_idx == len(steps) - 1 else 0))
        for loop_idx in range(n_loops)
        for step_idx, name in enumerate(steps)
    ]


def write_task(
    log_root: Path,
    task_id: str,
    timeline: Iterable[TimelineEntry],
    *,
    hist: Sequence[ExperimentSpec] = (),
    loop_path: str = FACTOR_LOOP,
    task_run_id: str | None = None,
    protocol: int = 4,
    signing_key: str | None = None,
) -> Path:
    """Write ``<log_root>/<task_id>/__session__/...`` for every timeline entry; returns the task log dir.

    Each snapshot pickles a fresh loop whose hist is ``hist[:hist_len]`` (objects are built once per task,
    so every snapshot of one timeline describes the same experiments).
    """
    log_dir = log_root / task_id
    (log_dir / "__session__").mkdir(parents=True, exist_ok=True)
    full_hist = build_hist(hist)
    for entry in timeline:
        snap = entry if isinstance(entry, Snap) else Snap(*entry)
        path = log_dir / snap.relpath
        if snap.raw is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(snap.raw)
            continue
        entries = build_hist(snap.hist) if snap.hist is not None else full_hist
        if snap.hist_len > len(entries):
            raise ValueError(f"{snap.relpath}: hist_len {snap.hist_len} > {len(entries)} hist specs")
        loop = build_loop(
            entries[: snap.hist_len],
            loop_path=loop_path,
            task_run_id=task_run_id,
            loop_idx=snap.loop_idx,
            padding_bytes=snap.padding_bytes,
        )
        data = snapshot_bytes(loop, protocol=protocol, signing_key=signing_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if snap.truncate_to is None else data[: snap.truncate_to])
    return log_dir


def write_combined_factors_parquet(
    path: Path, factor_names: Sequence[str], *, days: int = 10, instruments: Sequence[str] = ("000001.SZ", "600000.SH")
) -> Path:
    """A real ``combined_factors_df.parquet``: ``('feature', name)`` MultiIndex columns, (datetime, instrument) rows.

    ``path`` may be the workspace folder (the file name is appended) or the file itself.
    """
    import numpy as np
    import pandas as pd

    target = path / "combined_factors_df.parquet" if path.suffix != ".parquet" else path
    target.parent.mkdir(parents=True, exist_ok=True)
    index = pd.MultiIndex.from_product(
        [pd.date_range("2024-01-02", periods=days, freq="B"), list(instruments)], names=["datetime", "instrument"]
    )
    columns = pd.MultiIndex.from_tuples([("feature", n) for n in factor_names])
    values = np.random.default_rng(len(factor_names)).standard_normal((len(index), len(factor_names)))
    pd.DataFrame(values, index=index, columns=columns).to_parquet(target)
    return target


def workspace_dir(workspaces_root: Path, spec: ExperimentSpec, position: int) -> Path:
    """Local folder of the experiment's workspace when ``WSL_WORKSPACE_PREFIX`` is mapped to ``workspaces_root``."""
    return workspaces_root / spec.hex_for(position)
