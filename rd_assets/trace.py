"""Interpret an unpickled RD-Agent loop: find the last SOTA factor experiment and the SOTA factor list.

Rules (DESIGN.md section 2): walk ``trace.hist`` from the end; the first entry whose feedback
``decision is True`` and whose experiment is a qlib factor experiment (by class path, in both the
``factor_experiment`` and ``quant_experiment`` modules) is the anchor. Its SOTA factors are the factor
sub_tasks of its ``based_experiments`` (placeholder and model experiments skipped) followed by its own;
a later factor with the same name replaces the earlier one, at the later position.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePath, PureWindowsPath
from typing import Any, Literal

from rd_assets.errors import NoSotaFactorExperimentError, UnreadableSnapshotError
from rd_assets.metrics import metrics_dict
from rd_assets.models import (
    BasedExperimentRef,
    FactorRecord,
    SotaFactorExperiment,
    SubWorkspaceRef,
)
from rd_assets.unpickler import class_path

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


def attr(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute of a stand-in (its recorded state), without ever calling anything on it."""
    state = getattr(obj, "__dict__", None)
    return state.get(name, default) if isinstance(state, dict) else default


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


def _pair(entry: Any) -> tuple[Any, Any]:
    if isinstance(entry, tuple | list) and len(entry) == 2:
        return entry[0], entry[1]
    return None, None


def find_anchor(hist: list[Any], *, path: str | None = None) -> tuple[int, Any, Any]:
    """``(hist_index, experiment, feedback)`` of the last accepted factor experiment."""
    for index in range(len(hist) - 1, -1, -1):
        exp, feedback = _pair(hist[index])
        if attr(feedback, "decision") is True and is_factor_experiment(exp) and attr(exp, "sub_tasks"):
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
        return str(value), "windows"
    text = str(value) if isinstance(value, PurePath | str) else None
    if text is None:
        return None, None
    return text, "windows" if _WINDOWS_DRIVE.match(text) else "posix"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _file_dict(workspace: Any) -> dict[str, Any]:
    files = attr(workspace, "file_dict")
    return files if isinstance(files, dict) else {}


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


def _factor_records(exp: Any, *, hist_index: int | None, based_index: int | None) -> list[FactorRecord]:
    metrics, metrics_reason = experiment_metrics(exp)
    workspaces = attr(exp, "sub_workspace_list") or []
    records = []
    for j, task in enumerate(attr(exp, "sub_tasks") or []):
        name = _text(attr(task, "factor_name")) or _text(attr(task, "name"))
        if not name:
            continue
        workspace = workspaces[j] if j < len(workspaces) else None
        code = _file_dict(workspace).get("factor.py")
        if workspace is None:
            missing = "sub-workspace is None (coding failed)"
        elif not isinstance(code, str):
            missing = "sub-workspace file_dict has no factor.py text"
        else:
            missing = None
        code = code if isinstance(code, str) else None
        variables = attr(task, "variables")
        records.append(
            FactorRecord(
                name=name,
                description=_text(attr(task, "description")) or _text(attr(task, "factor_description")),
                formulation=_text(attr(task, "factor_formulation")),
                variables=variables if isinstance(variables, dict) else None,
                code=code,
                code_sha256=hashlib.sha256(code.encode("utf-8")).hexdigest() if code is not None else None,
                code_missing_reason=missing,
                metrics=metrics,
                metrics_unavailable_reason=metrics_reason,
                hist_index=hist_index,
                experiment_class_path=class_path(exp) or type(exp).__name__,
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


def _based_kind(exp: Any) -> Literal["placeholder", "factor", "model", "other"]:
    if is_factor_experiment(exp):
        return "factor" if attr(exp, "sub_tasks") else "placeholder"
    return "model" if is_model_experiment(exp) else "other"


def _hypothesis_text(exp: Any) -> str | None:
    hypothesis = attr(exp, "hypothesis")
    return _text(attr(hypothesis, "hypothesis")) or _text(hypothesis)


def _base_features(anchor: Any, anchor_index: int) -> tuple[dict[str, str] | None, str | None]:
    """The anchor's ``base_features`` (names -> expressions) when it is a plain ``str -> str`` dict."""
    state = getattr(anchor, "__dict__", None)
    if not isinstance(state, dict) or "base_features" not in state or state["base_features"] is None:
        return None, None
    value = state["base_features"]
    where = f"trace.hist[{anchor_index}][0].base_features"
    if not isinstance(value, dict) or not value:
        return None, f"{where} is a {type(value).__name__}, not a non-empty dict of names -> expressions"
    if not all(type(k) is str and type(v) is str for k, v in value.items()):
        return None, f"{where} holds keys or values that are not strings"
    return dict(value), None


def _model_py(anchor: Any, anchor_index: int, model_exp: Any, model_hist: int | None) -> tuple[str | None, str, str]:
    """The ``model.py`` the sota_model config imported: the copy the runner injected into the anchor's workspace.

    Returns ``(text, source, problem)``; the model experiment's own copy is the fallback and the cross-check.
    """
    injected = _file_dict(attr(anchor, "experiment_workspace")).get("model.py")
    where_injected = f"trace.hist[{anchor_index}][0].experiment_workspace.file_dict['model.py']"
    own = [
        (f"trace.hist[{model_hist}][0].sub_workspace_list[{i}].file_dict['model.py']", code)
        for i, ws in enumerate(attr(model_exp, "sub_workspace_list") or [])
        if isinstance(code := _file_dict(ws).get("model.py"), str)
    ]
    if isinstance(injected, str):
        if own and own[0][1] != injected:
            return injected, where_injected, f"differs from {own[0][0]}; the injected copy is the one qrun imported"
        return injected, where_injected, ""
    if own:
        return own[0][1], own[0][0], ""
    return None, "", f"neither {where_injected} nor the model experiment trace.hist[{model_hist}] holds model.py text"


def interpret_trace(loop: Any, *, task_id: str, chosen_snapshot: str) -> SotaFactorExperiment:
    """Everything downstream needs from the chosen snapshot, as one pydantic document."""
    hist = hist_of(loop, path=chosen_snapshot)
    anchor_index, anchor, feedback = find_anchor(hist, path=chosen_snapshot)
    hist_positions = {id(_pair(entry)[0]): i for i, entry in enumerate(hist)}

    based_refs: list[BasedExperimentRef] = []
    factors: list[FactorRecord] = []
    model_exp: Any = None
    for b, based in enumerate(attr(anchor, "based_experiments") or []):
        kind = _based_kind(based)
        if kind == "model":
            model_exp = based
        own = (
            _factor_records(based, hist_index=hist_positions.get(id(based)), based_index=b) if kind == "factor" else []
        )
        factors.extend(own)
        based_refs.append(
            BasedExperimentRef(
                based_index=b,
                class_path=class_path(based),
                kind=kind,
                hist_index=hist_positions.get(id(based)),
                factor_names=[f.name for f in own],
            )
        )
    factors.extend(_factor_records(anchor, hist_index=anchor_index, based_index=None))

    sub_workspaces = [
        SubWorkspaceRef(
            index=i,
            class_path=class_path(ws),
            file_dict_keys=sorted(str(k) for k in _file_dict(ws)),
            workspace_path=path_text(attr(ws, "workspace_path"))[0],
        )
        for i, ws in enumerate(attr(anchor, "sub_workspace_list") or [])
    ]
    exp_ws = attr(anchor, "experiment_workspace")
    ws_path, ws_style = path_text(attr(exp_ws, "workspace_path"))
    exp_files = _file_dict(exp_ws)
    metrics, metrics_reason = experiment_metrics(anchor)
    run_id = attr(loop, "task_run_id")
    base_features, base_problem = _base_features(anchor, anchor_index)
    model_hist = hist_positions.get(id(model_exp)) if model_exp is not None else None
    model_py, model_py_source, model_py_problem = (
        _model_py(anchor, anchor_index, model_exp, model_hist) if model_exp is not None else (None, "", "")
    )
    return SotaFactorExperiment(
        task_id=task_id,
        chosen_snapshot=chosen_snapshot,
        hist_len=len(hist),
        last_sota_factor_index=anchor_index,
        anchor_class_path=class_path(anchor) or "",
        anchor_hypothesis=_hypothesis_text(anchor),
        feedback_reason=_text(attr(feedback, "reason")),
        anchor_metrics=metrics,
        anchor_metrics_unavailable_reason=metrics_reason,
        based_experiments=based_refs,
        sub_workspaces=sub_workspaces,
        experiment_workspace_path=ws_path,
        experiment_workspace_path_style=ws_style,
        experiment_workspace_files=sorted(str(k) for k in exp_files),
        experiment_workspace_yaml={
            k: v for k, v in sorted(exp_files.items()) if isinstance(v, str) and k.endswith((".yaml", ".yml"))
        },
        sota_factors=_dedup_keep_last(factors),
        task_run_id=run_id if isinstance(run_id, str) else None,
        base_features=base_features,
        base_features_problem=base_problem,
        sota_model_hist_index=model_hist,
        model_py=model_py,
        model_py_source=model_py_source or None,
        model_py_problem=model_py_problem or None,
    )


def anchor_experiment(loop: Any, *, path: str | None = None) -> tuple[int, Any]:
    """The anchor experiment object itself (for artifacts that are not part of the summary: weights)."""
    index, exp, _ = find_anchor(hist_of(loop, path=path), path=path)
    return index, exp
