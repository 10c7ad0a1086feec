"""Interpret an unpickled RD-Agent loop: find the last SOTA factor experiment and the SOTA factor list.

Rules (DESIGN.md section 2): walk ``trace.hist`` from the end; the first entry whose feedback
``decision is True`` and whose experiment is a qlib factor experiment (by class path, in both the
``factor_experiment`` and ``quant_experiment`` modules) is the anchor. Its SOTA factors are the factor
sub_tasks of its ``based_experiments`` (placeholder and model experiments skipped) followed by its own;
a later factor with the same name replaces the earlier one, at the later position.

The graph comes from an untrusted file, so every value is read through one accessor per expected kind
(:func:`expect_list`, :func:`expect_object`, :func:`expect_str_dict`, :func:`text`, :func:`source_text`) that
names its place in the trace (``trace.hist[3][0].sub_tasks``). What decides *which* factors are SOTA and
where their code and weights come from (hist entries from the end down to the anchor, the lists of
sub_tasks, sub-workspaces and based experiments, the items of those lists, file_dicts, factor names) is
never guessed: any other shape is an :class:`UnreadableSnapshotError` naming the place. Informational
values degrade instead: to ``None`` with a reason field (code, metrics, model.py) or to marker text
(variables, metrics values, cut descriptions; see :mod:`rd_assets.core.trace.metrics`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import PurePath, PureWindowsPath
from typing import Any, Literal

from pydantic import ValidationError

from rd_assets.core.contracts.models import (
    BasedExperimentRef,
    FactorRecord,
    SotaFactorExperiment,
    SubWorkspaceRef,
)
from rd_assets.core.errors import NoSotaFactorExperimentError, UnreadableSnapshotError
from rd_assets.core.session.standins import StandIn, class_path
from rd_assets.core.text_safety import escape_surrogates
from rd_assets.core.trace.metrics import describe, json_data, metrics_dict, plain_text

_QLIB_EXPERIMENT_MODULES = (
    "rdagent.scenarios.qlib.experiment.factor_experiment",
    "rdagent.scenarios.qlib.experiment.quant_experiment",
)
FACTOR_EXPERIMENT_CLASSES = frozenset(f"{m}.QlibFactorExperiment" for m in _QLIB_EXPERIMENT_MODULES)
MODEL_EXPERIMENT_CLASSES = frozenset(
    f"{m}.QlibModelExperiment"
    for m in (*_QLIB_EXPERIMENT_MODULES, "rdagent.scenarios.qlib.experiment.model_experiment")
)
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")

MAX_NAME_CHARS = 200
"""Longest factor name: it becomes a bundle file name, and file systems stop at 255 bytes."""
MAX_SOURCE_CHARS = 8 << 20
"""Longest source text (factor.py, model.py, YAML) taken from a session; longer text is reported, never cut."""


def attr(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute of a stand-in (its recorded state), without ever calling anything on it."""
    state = getattr(obj, "__dict__", None)
    return state.get(name, default) if isinstance(state, dict) else default


def _unreadable(where: str, expected: str, found: str, path: str | None) -> UnreadableSnapshotError:
    return UnreadableSnapshotError(f"{where}: expected {expected}, found {found}", path=path)


def expect_list(value: Any, where: str, *, path: str | None = None) -> list[Any]:
    """A list (or tuple) as a list; missing (``None``) is empty; any other shape is an unreadable snapshot."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    raise _unreadable(where, "a list", describe(value), path)


def expect_object(value: Any, where: str, *, path: str | None = None) -> StandIn | None:
    """An rdagent object (a stand-in) or ``None``; a bare value where an object belongs is unreadable."""
    if value is None or isinstance(value, StandIn):
        return value
    raise _unreadable(where, "an rdagent object or None", describe(value), path)


def expect_str_dict(value: Any, where: str, *, path: str | None = None) -> dict[str, Any]:
    """A dict keyed by text (a ``file_dict``); missing is empty; other shapes and other keys are unreadable."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _unreadable(where, "a dict", describe(value), path)
    for key in value:
        if not isinstance(key, str):
            raise _unreadable(where, "file names (str) as keys", f"a key of type {describe(key)}", path)
    return value


def text(value: Any) -> str | None:
    """Informational text (description, hypothesis, path): bounded and escaped; a non-text value is ``None``."""
    return plain_text(value) if isinstance(value, str) else None


def source_text(value: Any, where: str) -> tuple[str | None, str | None]:
    """``(text, None)`` of a source file (factor.py, model.py, YAML), or ``(None, why not)``.

    Source is published exactly as the session holds it or not at all: text that is too long or that no
    UTF-8 file can hold (lone surrogates, which rdagent never wrote to disk, so never ran) is missing, with
    the reason, instead of being cut or escaped like informational text.
    """
    if not isinstance(value, str):
        return None, f"{where} holds no text"
    if len(value) > MAX_SOURCE_CHARS:
        return None, f"{where} is {len(value)} characters long, over the {MAX_SOURCE_CHARS} limit"
    if escape_surrogates(value) is not value:
        return None, f"{where} is not valid UTF-8 text (it holds lone surrogates)"
    return value, None


def hist_of(loop: Any, *, path: str | None = None) -> list[Any]:
    """``loop.trace.hist`` as a list of (experiment, feedback) pairs; a loop without one is unreadable."""
    hist = attr(attr(loop, "trace"), "hist")
    if not isinstance(hist, list):
        raise UnreadableSnapshotError("the pickled loop has no trace.hist list", path=path)
    return hist


def is_factor_experiment(exp: Any) -> bool:
    return class_path(exp) in FACTOR_EXPERIMENT_CLASSES


def is_model_experiment(exp: Any) -> bool:
    return class_path(exp) in MODEL_EXPERIMENT_CLASSES


def _pair(entry: Any) -> tuple[Any, Any] | None:
    """``(experiment, feedback)`` of a hist entry, ``None`` for an entry of another shape."""
    return (entry[0], entry[1]) if isinstance(entry, tuple | list) and len(entry) == 2 else None


def _sub_tasks(exp: Any, where: str, path: str | None) -> list[Any]:
    return expect_list(attr(exp, "sub_tasks"), f"{where}.sub_tasks", path=path)


def find_anchor(hist: list[Any], *, path: str | None = None) -> tuple[int, Any, Any]:
    """``(hist_index, experiment, feedback)`` of the last accepted factor experiment.

    An entry passed on the way that is not an (experiment, feedback) pair is unreadable: it might have been
    the real anchor, so skipping it could silently publish an older SOTA.
    """
    for index in range(len(hist) - 1, -1, -1):
        pair = _pair(hist[index])
        if pair is None:
            raise _unreadable(f"trace.hist[{index}]", "an (experiment, feedback) pair", describe(hist[index]), path)
        exp, feedback = pair
        if (
            attr(feedback, "decision") is True
            and is_factor_experiment(exp)
            and _sub_tasks(exp, f"trace.hist[{index}][0]", path)
        ):
            return index, exp, feedback
    raise NoSotaFactorExperimentError(
        f"none of the {len(hist)} trace.hist entries is an accepted (decision is True) qlib factor experiment",
        path=path,
    )


def path_text(value: Any) -> tuple[str | None, Literal["posix", "windows"] | None]:
    """str() of a pickled workspace path and its style (``F:/...`` and ``F:\\...`` are windows)."""
    if value is None:
        return None, None
    if isinstance(value, PureWindowsPath):
        return text(str(value)), "windows"
    shown = text(str(value)) if isinstance(value, PurePath | str) else None
    if shown is None:
        return None, None
    return shown, "windows" if _WINDOWS_DRIVE.match(shown) else "posix"


def file_dict_of(workspace: StandIn | None, where: str, *, path: str | None = None) -> dict[str, Any]:
    """``workspace.file_dict`` (``where`` names the workspace); a workspace that is ``None`` has no files."""
    return expect_str_dict(attr(workspace, "file_dict"), f"{where}.file_dict", path=path)


def key_list(files: dict[str, Any]) -> list[str]:
    """The file names of a file_dict, sorted and printable (for listings, not lookups)."""
    return sorted(plain_text(k) for k in files)


def experiment_metrics(exp: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Metrics of an experiment: ``running_info.result``, else the legacy ``result`` attribute."""
    running = attr(exp, "running_info")
    result = attr(running, "result") if running is not None else None
    if result is None:
        result = attr(exp, "result")
    return metrics_dict(result)


def factor_key(based_index: int | None, sub_task_index: int) -> str:
    """The file_dict-style key consumers use for a factor's code."""
    name = "factor.py" if sub_task_index == 0 else f"factor_{sub_task_index}.py"
    return name if based_index is None else f"based_factor_{based_index}/{name}"


def _factor_name(task: StandIn | None, where: str, path: str | None) -> str | None:
    """``factor_name``, else ``name``; a task with neither is not a factor.

    A name is load-bearing (it deduplicates factors and becomes a file name), so one that is not short text is
    unreadable rather than skipped.
    """
    for key in ("factor_name", "name"):
        value = attr(task, key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise _unreadable(f"{where}.{key}", "a name (str)", describe(value), path)
        if len(value) > MAX_NAME_CHARS:
            raise _unreadable(f"{where}.{key}", f"a name of at most {MAX_NAME_CHARS} characters", f"{len(value)}", path)
        return escape_surrogates(value)
    return None


def _factor_records(
    exp: Any, where: str, *, hist_index: int | None, based_index: int | None, path: str | None
) -> list[FactorRecord]:
    metrics, metrics_reason = experiment_metrics(exp)
    workspaces = expect_list(attr(exp, "sub_workspace_list"), f"{where}.sub_workspace_list", path=path)
    records = []
    for j, raw_task in enumerate(_sub_tasks(exp, where, path)):
        task = expect_object(raw_task, f"{where}.sub_tasks[{j}]", path=path)
        name = _factor_name(task, f"{where}.sub_tasks[{j}]", path)
        if not name:
            continue
        ws_where = f"{where}.sub_workspace_list[{j}]"
        workspace = expect_object(workspaces[j], ws_where, path=path) if j < len(workspaces) else None
        files = file_dict_of(workspace, ws_where, path=path)
        if workspace is None:
            code, missing = None, "sub-workspace is None (coding failed)"
        elif not isinstance(files.get("factor.py"), str):
            code, missing = None, "sub-workspace file_dict has no factor.py text"
        else:
            code, missing = source_text(files["factor.py"], f"{ws_where}.file_dict['factor.py']")
        variables = attr(task, "variables")
        records.append(
            FactorRecord(
                name=name,
                description=text(attr(task, "description")) or text(attr(task, "factor_description")),
                formulation=text(attr(task, "factor_formulation")),
                variables=json_data(variables) if isinstance(variables, dict) else None,
                code=code,
                code_sha256=hashlib.sha256(code.encode("utf-8")).hexdigest() if code is not None else None,
                code_missing_reason=missing,
                metrics=metrics,
                metrics_unavailable_reason=metrics_reason,
                hist_index=hist_index,
                experiment_class_path=text(class_path(exp)) or type(exp).__name__,
                based_index=based_index,
                sub_task_index=j,
                file_dict_key=factor_key(based_index, j),
            )
        )
    return records


def _dedup_keep_last(records: list[FactorRecord]) -> list[FactorRecord]:
    """A later factor with the same name replaces the earlier one at the later position (keep='last')."""
    last = {r.name: i for i, r in enumerate(records)}
    return [r for i, r in enumerate(records) if last[r.name] == i]


def _based_kind(exp: Any, where: str, path: str | None) -> Literal["placeholder", "factor", "model", "other"]:
    if is_factor_experiment(exp):
        return "factor" if _sub_tasks(exp, where, path) else "placeholder"
    return "model" if is_model_experiment(exp) else "other"


def _hypothesis_text(exp: Any) -> str | None:
    hypothesis = attr(exp, "hypothesis")
    return text(attr(hypothesis, "hypothesis")) or text(hypothesis)


def _base_features(anchor: Any, where: str) -> tuple[dict[str, str] | None, str | None]:
    """The anchor's ``base_features`` (names -> expressions) when it is a plain ``str -> str`` dict."""
    state = getattr(anchor, "__dict__", None)
    if not isinstance(state, dict) or "base_features" not in state or state["base_features"] is None:
        return None, None
    value = state["base_features"]
    where = f"{where}.base_features"
    if not isinstance(value, dict) or not value:
        return None, f"{where}: expected a non-empty dict of names -> expressions, found {describe(value)}"
    if not all(type(k) is str and type(v) is str for k, v in value.items()):
        return None, f"{where} holds keys or values that are not strings"
    return dict(value), None


def _model_py(
    injected_files: dict[str, Any], where: str, model_exp: Any, model_where: str, path: str | None
) -> tuple[str | None, str, str]:
    """The ``model.py`` the sota_model config imported: the copy the runner injected into the anchor's workspace.

    Returns ``(text, source, problem)``; the model experiment's own copy is the fallback and the cross-check.
    """
    where_injected = f"{where}.experiment_workspace.file_dict['model.py']"
    injected, injected_problem = source_text(injected_files.get("model.py"), where_injected)
    own: list[tuple[str, str]] = []
    sub_where = f"{model_where}.sub_workspace_list"
    for i, raw in enumerate(expect_list(attr(model_exp, "sub_workspace_list"), sub_where, path=path)):
        ws_where = f"{sub_where}[{i}]"
        files = file_dict_of(expect_object(raw, ws_where, path=path), ws_where, path=path)
        code, _ = source_text(files.get("model.py"), f"{ws_where}.file_dict['model.py']")
        if code is not None:
            own.append((f"{ws_where}.file_dict['model.py']", code))
    if injected is not None:
        if own and own[0][1] != injected:
            return injected, where_injected, f"differs from {own[0][0]}; the injected copy is the one qrun imported"
        return injected, where_injected, ""
    if own:
        return own[0][1], own[0][0], ""
    unusable = injected_problem if isinstance(injected_files.get("model.py"), str) else None
    return None, "", unusable or f"neither {where_injected} nor the model experiment {model_where} holds model.py text"


def interpret_trace(loop: Any, *, task_id: str, chosen_snapshot: str) -> SotaFactorExperiment:
    """Everything downstream needs from the chosen snapshot, as one pydantic document.

    A value the accessors let through but a contract refuses (see :mod:`rd_assets.core.contracts.models`) is still a
    typed :class:`UnreadableSnapshotError`, never a ``ValidationError``.
    """
    try:
        return _interpret(loop, task_id=task_id, chosen_snapshot=chosen_snapshot)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or e['type']}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)[:3]
        )
        raise UnreadableSnapshotError(
            f"a value of the trace cannot be written as JSON ({plain_text(problems, 1000)})", path=chosen_snapshot
        ) from exc


@dataclass
class _Based:
    """What the anchor's ``based_experiments`` contribute: their refs, their factors and the SOTA model experiment."""

    refs: list[BasedExperimentRef] = field(default_factory=list)
    factors: list[FactorRecord] = field(default_factory=list)
    model: Any = None
    model_hist: int | None = None
    model_where: str = ""


def _based(anchor: Any, where: str, hist_positions: dict[int, int], path: str | None) -> _Based:
    """Each based experiment is named by its own hist place when it is one of hist's objects (it usually is)."""
    found = _Based()
    for b, raw in enumerate(expect_list(attr(anchor, "based_experiments"), f"{where}.based_experiments", path=path)):
        based = expect_object(raw, f"{where}.based_experiments[{b}]", path=path)
        hist_index = hist_positions.get(id(based)) if based is not None else None
        based_where = f"trace.hist[{hist_index}][0]" if hist_index is not None else f"{where}.based_experiments[{b}]"
        kind = _based_kind(based, based_where, path)
        own = []
        if kind == "factor":
            own = _factor_records(based, based_where, hist_index=hist_index, based_index=b, path=path)
        elif kind == "model":
            found.model, found.model_hist, found.model_where = based, hist_index, based_where
        found.factors.extend(own)
        found.refs.append(
            BasedExperimentRef(
                based_index=b,
                class_path=text(class_path(based)),
                kind=kind,
                hist_index=hist_index,
                factor_names=[f.name for f in own],
            )
        )
    return found


def _sub_workspace_refs(anchor: Any, where: str, path: str | None) -> list[SubWorkspaceRef]:
    sub_where = f"{where}.sub_workspace_list"
    refs = []
    for i, raw in enumerate(expect_list(attr(anchor, "sub_workspace_list"), sub_where, path=path)):
        ws = expect_object(raw, f"{sub_where}[{i}]", path=path)
        refs.append(
            SubWorkspaceRef(
                index=i,
                class_path=text(class_path(ws)),
                file_dict_keys=key_list(file_dict_of(ws, f"{sub_where}[{i}]", path=path)),
                workspace_path=path_text(attr(ws, "workspace_path"))[0],
            )
        )
    return refs


def _interpret(loop: Any, *, task_id: str, chosen_snapshot: str) -> SotaFactorExperiment:
    path = chosen_snapshot
    hist = hist_of(loop, path=path)
    anchor_index, anchor, feedback = find_anchor(hist, path=path)
    where = f"trace.hist[{anchor_index}][0]"
    hist_positions = {id(pair[0]): i for i, entry in enumerate(hist) if (pair := _pair(entry)) is not None}
    based = _based(anchor, where, hist_positions, path)
    factors = [*based.factors, *_factor_records(anchor, where, hist_index=anchor_index, based_index=None, path=path)]

    exp_where = f"{where}.experiment_workspace"
    exp_ws = expect_object(attr(anchor, "experiment_workspace"), exp_where, path=path)
    ws_path, ws_style = path_text(attr(exp_ws, "workspace_path"))
    exp_files = file_dict_of(exp_ws, exp_where, path=path)
    yaml = {
        plain_text(k): code
        for k, v in sorted(exp_files.items())
        if k.endswith((".yaml", ".yml")) and (code := source_text(v, k)[0]) is not None
    }
    metrics, metrics_reason = experiment_metrics(anchor)
    base_features, base_problem = _base_features(anchor, where)
    model_py, model_py_source, model_py_problem = (
        _model_py(exp_files, where, based.model, based.model_where, path) if based.model is not None else (None, "", "")
    )
    return SotaFactorExperiment(
        task_id=task_id,
        chosen_snapshot=chosen_snapshot,
        hist_len=len(hist),
        last_sota_factor_index=anchor_index,
        anchor_class_path=class_path(anchor) or "",
        anchor_hypothesis=_hypothesis_text(anchor),
        feedback_reason=text(attr(feedback, "reason")),
        anchor_metrics=metrics,
        anchor_metrics_unavailable_reason=metrics_reason,
        based_experiments=based.refs,
        sub_workspaces=_sub_workspace_refs(anchor, where, path),
        experiment_workspace_path=ws_path,
        experiment_workspace_path_style=ws_style,
        experiment_workspace_files=key_list(exp_files),
        experiment_workspace_yaml=yaml,
        sota_factors=_dedup_keep_last(factors),
        task_run_id=text(attr(loop, "task_run_id")),
        base_features=base_features,
        base_features_problem=base_problem,
        sota_model_hist_index=based.model_hist,
        model_py=model_py,
        model_py_source=model_py_source or None,
        model_py_problem=model_py_problem or None,
    )


def anchor_experiment(loop: Any, *, path: str | None = None) -> tuple[int, Any]:
    """The anchor experiment object itself (for artifacts that are not part of the summary: weights)."""
    index, exp, _ = find_anchor(hist_of(loop, path=path), path=path)
    return index, exp
