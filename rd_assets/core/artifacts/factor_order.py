"""The model's input order, as the executed config's data loader builds it from two name lists.

The alpha names: literal in the executed YAML (what qrun ran), else - when the YAML holds the unrendered
``{{ feature_names }}`` - the anchor's pickled ``base_features`` keys (rdagent 1.0 renders that placeholder
from them in memory only). The dynamic names: the footer of ``<experiment_workspace.workspace_path>/
combined_factors_df.parquet`` (DESIGN.md rule 5: the only file outside ``__session__`` ever opened), decoded
from the pandas metadata - the data pages are never read. The file is untrusted: it is opened without following
a symlink or blocking on a FIFO, and the footer length it claims is checked before anything is allocated.

The loader decides the order: the fork's ``CombinedAlpha158DynamicFactorsLoader`` keeps alpha then parquet
(``alpha_then_parquet``); qlib's ``NestedDataLoader`` lets a later loader's column replace an earlier one and
ends with ``sort_index(axis=1)`` (``sorted_union``); a bare ``Alpha158DL`` has no dynamic part (``alpha_only``).
Any other loader is refused. Nothing is padded, trimmed or guessed: an unresolved part stays ``None`` with a
typed code and its reason, and a count mismatch is stated with both counts.
"""

from __future__ import annotations

import ast
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from rd_assets.core.artifacts.order_rules import RULE_REASONS, OrderRule, combine_order
from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.artifacts.qlib_config import (
    HANDLER_KWARGS_PATH,
    decide_config,
    handler_kwargs,
    is_placeholder,
    parse_config,
    spec_kwargs,
)
from rd_assets.core.contracts.artifact_models import FactorOrder
from rd_assets.core.contracts.models import SotaFactorExperiment
from rd_assets.core.errors import (
    AlphaNamesUnresolvedError,
    ConfigUnresolvedError,
    FactorOrderUnresolvedError,
    FactorParquetNotFoundError,
    FactorParquetUnreadableError,
    FeatureCountMismatchError,
    ModelFeatureCountUnknownError,
    RdAssetsError,
    UnknownDataLoaderError,
)
from rd_assets.core.isolation import isolated
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.file_format import file_kind

PARQUET_NAME = "combined_factors_df.parquet"
_COLUMN_FILTERS = ("FilterCol", "DropCol")

MAX_FOOTER_BYTES = 16 * 1024 * 1024
"""The footer holds the schema and row-group metadata: tens of KB for a few hundred factor columns. The length
is read from the file, so without a cap a forged one makes the reader allocate gigabytes."""
MAX_COLUMN_LABEL_CHARS = 4096
"""A pandas column label is ``"('feature', '<name>')"``; a longer one is hostile input for ``ast.literal_eval``."""
_PARQUET_MAGIC = b"PAR1"
_MIN_PARQUET_BYTES = 12
"""Leading magic, then the trailing 4-byte footer length and magic: a file around an empty footer."""
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""No symlink is followed (rule 5 names one file, not where it points) and a FIFO cannot block the open."""


class FactorOrderError(FactorParquetUnreadableError, ValueError):
    """The parquet's pandas metadata does not name ``('feature', name)`` columns; the message says why.

    Still a ``ValueError`` for callers written before it was a typed error.
    """


_ERRORS: dict[str, type[FactorOrderUnresolvedError]] = {
    cls.code: cls
    for cls in (
        ConfigUnresolvedError,
        UnknownDataLoaderError,
        AlphaNamesUnresolvedError,
        FactorParquetNotFoundError,
        FactorParquetUnreadableError,
        ModelFeatureCountUnknownError,
    )
}


@dataclass(frozen=True)
class Part:
    """One resolved or unresolved part of the order, with where it came from and, if unresolved, why."""

    names: list[str] | None
    source: str | None
    reason: str | None
    code: str | None = None
    placeholder: str | None = None
    """The unrendered Jinja text that stands where the names should be."""
    kind: Literal["config", "base_features"] | None = None
    """Where resolved alpha names were read (kept through column filters)."""


@dataclass(frozen=True)
class LoaderLayout:
    """What the executed config's data loader says about the features, and the order rule it implies."""

    alpha: Part
    rule: OrderRule | None
    dynamic_problem: str | None = None


def _feature_names(config_name: str, where: str, spec: Any) -> Part:
    """Names of a qlib ``feature: [expressions, names]`` pair."""
    source = f"{where}.feature[1]"
    feature = spec.get("feature") if isinstance(spec, dict) else None
    if not isinstance(feature, list) or len(feature) != 2:
        return Part(None, source, f"{config_name}: {where}.feature is not an [expressions, names] pair")
    expressions, names = feature
    if is_placeholder(names):
        reason = f"{config_name}: the alpha names are the unrendered Jinja placeholder {names}"
        return Part(None, source, reason, AlphaNamesUnresolvedError.code, placeholder=names)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        reason = f"{config_name}: {where}.feature[1] is not a list of names"
        return Part(None, source, reason, AlphaNamesUnresolvedError.code)
    if isinstance(expressions, list) and len(expressions) != len(names):
        reason = f"{config_name}: {where}.feature has {len(expressions)} expressions but {len(names)} names"
        return Part(None, source, reason, AlphaNamesUnresolvedError.code)
    return Part(list(names), source, None)


def _class_name(spec: Any) -> str:
    cls = spec.get("class") if isinstance(spec, dict) else None
    return cls.rsplit(".", 1)[-1] if isinstance(cls, str) else ""


def _dynamic_file_problem(config_name: str, value: Any) -> str | None:
    if isinstance(value, str) and str(PurePosixPath(value)) == PARQUET_NAME:
        return None
    return f"{config_name}: the dynamic loader reads {value!r}, not {PARQUET_NAME!r}; only that file may be opened"


def loader_layout(config: dict[str, Any], config_name: str) -> LoaderLayout:
    """Alpha158 part and whether a dynamic part follows, for the three loader shapes rdagent writes."""
    root = "data_handler_config" if isinstance(config.get("data_handler_config"), dict) else HANDLER_KWARGS_PATH
    where = f"{root}.data_loader"
    loader = handler_kwargs(config).get("data_loader")
    kwargs = spec_kwargs(loader)
    name = _class_name(loader)
    if name == "CombinedAlpha158DynamicFactorsLoader" and "alpha158_config" in kwargs:  # the fork
        alpha = _feature_names(config_name, f"{where}.kwargs.alpha158_config", kwargs["alpha158_config"])
        return LoaderLayout(alpha, "alpha_then_parquet", _dynamic_file_problem(config_name, kwargs.get("dynamic_path")))
    if name == "NestedDataLoader":  # upstream: Alpha158DL + StaticDataLoader(combined_factors_df.parquet)
        loaders = kwargs.get("dataloader_l") if isinstance(kwargs.get("dataloader_l"), list) else []
        kinds = [_class_name(sub) for sub in loaders]
        if kinds != ["Alpha158DL", "StaticDataLoader"]:
            reason = f"{config_name}: NestedDataLoader of {kinds}, expected [Alpha158DL, StaticDataLoader]"
            return LoaderLayout(Part(None, None, reason, UnknownDataLoaderError.code), None, reason)
        where_alpha = f"{where}.kwargs.dataloader_l[0].kwargs.config"
        alpha = _feature_names(config_name, where_alpha, spec_kwargs(loaders[0]).get("config"))
        dynamic_problem = _dynamic_file_problem(config_name, spec_kwargs(loaders[1]).get("config"))
        return LoaderLayout(alpha, "sorted_union", dynamic_problem)
    if name == "Alpha158DL":  # baseline
        alpha = _feature_names(config_name, f"{where}.kwargs.config", kwargs.get("config"))
        return LoaderLayout(alpha, "alpha_only")
    reason = f"{config_name}: data loader {name or loader!r} is not one whose feature order is known"
    return LoaderLayout(Part(None, None, reason, UnknownDataLoaderError.code), None, reason)


def _column_filters(config: dict[str, Any], config_name: str) -> list[tuple[str, Any]]:
    """``FilterCol`` / ``DropCol`` processors on the feature group, in the order qlib applies them."""
    kwargs = handler_kwargs(config)
    found = []
    for group in ("infer_processors", "learn_processors"):
        for proc in kwargs.get(group) or []:
            name = _class_name(proc)
            proc_kwargs = spec_kwargs(proc)
            if name in _COLUMN_FILTERS and proc_kwargs.get("fields_group", "feature") == "feature":
                found.append((name, proc_kwargs.get("col_list")))
    return found


def _apply_filters(part: Part, filters: list[tuple[str, Any]], config_name: str) -> Part:
    """qlib's FilterCol/DropCol keep the frame's own column order; only membership changes."""
    if part.names is None or not filters:
        return part
    names = part.names
    for name, col_list in filters:
        if not isinstance(col_list, list) or not all(isinstance(c, str) for c in col_list):
            reason = f"{config_name}: {name}.col_list is not a list of names ({col_list!r})"
            return Part(None, part.source, reason, ConfigUnresolvedError.code)
        keep = set(col_list)
        names = [n for n in names if (n in keep) == (name == "FilterCol")]
    applied = ", ".join(n for n, _ in filters)
    return Part(names, f"{part.source} filtered by {applied}", None, kind=part.kind)


def _list_field(meta: dict[str, Any], key: str) -> list[Any]:
    value = meta.get(key, [])
    if not isinstance(value, list):
        raise FactorOrderError(f"pandas metadata {key!r} is a {type(value).__name__}, not a list")
    return value


def _feature_key(label: Any) -> Any:
    """The column label as the Python literal pandas wrote with ``str(tuple)``; ``None`` when it is not one."""
    if not isinstance(label, str):
        return None
    if len(label) > MAX_COLUMN_LABEL_CHARS:
        raise FactorOrderError(f"a column label of {len(label)} characters (the cap is {MAX_COLUMN_LABEL_CHARS})")
    try:
        return ast.literal_eval(label)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def decode_feature_columns(schema: pa.Schema) -> list[str]:
    """Factor names of a ``combined_factors_df`` schema: ``('feature', name)`` columns in file order.

    The metadata is untrusted JSON: any shape other than pandas' own is a :class:`FactorOrderError`.
    """
    try:
        meta = schema.pandas_metadata
    except (ValueError, RecursionError, MemoryError) as exc:
        raise FactorOrderError(f"the pandas metadata is not readable JSON ({type(exc).__name__})") from exc
    if not meta:
        raise FactorOrderError("the parquet has no pandas metadata to tell index columns from features")
    if not isinstance(meta, dict):
        raise FactorOrderError(f"the pandas metadata is a {type(meta).__name__}, not an object")
    index_columns = {c for c in _list_field(meta, "index_columns") if isinstance(c, str)}
    levels = len(_list_field(meta, "column_indexes"))
    if levels != 2:
        raise FactorOrderError(f"columns are a {levels}-level index, expected the 2-level ('feature', name)")
    by_field = {
        c.get("field_name"): c.get("name")
        for c in _list_field(meta, "columns")
        if isinstance(c, dict) and isinstance(c.get("field_name"), str)
    }
    names = []
    for field in schema.names:
        if field in index_columns:
            continue
        key = _feature_key(by_field.get(field, field))
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == "feature" and isinstance(key[1], str)):
            raise FactorOrderError(f"column {field!r} is neither an index column nor ('feature', <name>)")
        names.append(key[1])
    return names


def _unreadable(parquet: Path, why: str) -> FactorParquetUnreadableError:
    return FactorParquetUnreadableError(f"{parquet} {why}", path=str(parquet))


def _open_footer(parquet: Path) -> bytes:
    """The footer of ``parquet`` as a minimal parquet buffer, read and bounded here (parsed elsewhere).

    Only a regular file reached without a symlink is read (a FIFO would hang a blocking open, a symlink
    points outside rule 5); the claimed footer length is checked against :data:`MAX_FOOTER_BYTES` and the
    file size before anything is allocated, and the data pages are never read.
    """
    try:
        fd = os.open(parquet, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise FactorParquetNotFoundError(f"{parquet} not found", path=str(parquet)) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(parquet):
            raise _unreadable(parquet, "is a symlink, which is not followed") from exc
        raise _unreadable(parquet, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        return _footer_buffer(fd, parquet)
    finally:
        os.close(fd)


def _footer_buffer(fd: int, parquet: Path) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise _unreadable(parquet, f"is {file_kind(info.st_mode)}, not a regular file")
    size = info.st_size
    if size < _MIN_PARQUET_BYTES:
        raise _unreadable(parquet, f"has {size} bytes, too few for a parquet file")
    tail = os.pread(fd, 8, size - 8)
    if len(tail) != 8 or tail[4:] != _PARQUET_MAGIC:
        raise _unreadable(parquet, f"does not end with the parquet magic {_PARQUET_MAGIC!r}")
    footer_len = int.from_bytes(tail[:4], "little")
    if footer_len > min(MAX_FOOTER_BYTES, size - _MIN_PARQUET_BYTES):
        why = f"claims a {footer_len}-byte footer (file: {size} bytes, cap: {MAX_FOOTER_BYTES})"
        raise _unreadable(parquet, why)
    footer = os.pread(fd, footer_len, size - 8 - footer_len)
    if len(footer) != footer_len:
        raise _unreadable(parquet, "shrank while its footer was read")
    return _PARQUET_MAGIC + footer + tail


def _schema_of(buffer: bytes, parquet: Path) -> pa.Schema:
    try:
        return pq.read_schema(pa.BufferReader(buffer))
    except Exception as exc:  # pyarrow's errors for a corrupt footer are many (ArrowInvalid, OSError...)
        raise _unreadable(parquet, f"has no readable parquet footer ({type(exc).__name__}: {exc})") from exc


def read_footer_schema(parquet: Path) -> pa.Schema:
    """The schema in ``parquet``'s footer, in this process (the extraction parses it isolated instead)."""
    return _schema_of(_open_footer(parquet), parquet)


@isolated
def footer_feature_columns(buffer: bytes, parquet: str) -> list[str]:
    """pyarrow's footer parse and the pandas-metadata decode, in the isolated reader: untrusted bytes."""
    path = Path(parquet)
    try:
        return decode_feature_columns(_schema_of(buffer, path))
    except FactorOrderError as exc:
        raise FactorParquetUnreadableError(f"{parquet}: {exc.message}", path=parquet) from exc


def read_dynamic_factors(parquet: Path, access: AccessLog | None, *, origin: str = "") -> Part:
    """Footer-only read of the anchor parquet (opened through Python so audit hooks see it).

    ``origin`` says how ``parquet`` was derived (pickled path and path-map rule), for a not-found or
    unreadable reason.
    """
    if access is not None:
        access.opened(parquet)
    try:
        return Part(footer_feature_columns(_open_footer(parquet), str(parquet)), str(parquet), None)
    except (FactorParquetNotFoundError, FactorParquetUnreadableError) as exc:
        return Part(None, str(parquet), f"{exc.message}{origin}", exc.code)
    except RdAssetsError as exc:  # the reader crashed or hit a limit on this footer
        return Part(
            None, str(parquet), f"{parquet}: {exc.code}: {exc.message}{origin}", FactorParquetUnreadableError.code
        )


def _dynamic_part(
    anchor: SotaFactorExperiment, layout: LoaderLayout, path_map: PathMap, access: AccessLog | None
) -> Part:
    if layout.dynamic_problem is not None:
        return Part(None, None, layout.dynamic_problem, UnknownDataLoaderError.code)
    if layout.rule == "alpha_only":
        return Part([], None, None)
    ws = anchor.experiment_workspace_path
    if ws is None:
        reason = "the anchor's experiment_workspace has no workspace_path"
        return Part(None, None, reason, FactorParquetNotFoundError.code)
    pickled = f"{ws.rstrip('/')}/{PARQUET_NAME}" if anchor.experiment_workspace_path_style != "windows" else ws
    local = path_map.map(ws)
    if local is None:
        return Part(None, None, f"{path_map.explain_unmapped(ws)} ({pickled})", FactorParquetNotFoundError.code)
    origin = f" (pickled workspace_path {ws!r}; {path_map.explain_rule(ws)})"
    return read_dynamic_factors(local / PARQUET_NAME, access, origin=origin)


def _alpha_part(layout: LoaderLayout, anchor: SotaFactorExperiment, config_name: str) -> tuple[Part, list[str]]:
    """Literal config names win (they are what qrun ran); an unrendered placeholder falls to ``base_features``."""
    alpha = layout.alpha
    base = anchor.base_features
    at = f"trace.hist[{anchor.last_sota_factor_index}][0]"
    if alpha.names is not None:
        where = f"{at}.experiment_workspace.file_dict[{config_name!r}] -> {alpha.source}"
        warnings = []
        if base is not None and list(base) != alpha.names:
            warnings.append(
                f"alpha_names_differ_from_base_features: {config_name} lists {len(alpha.names)} names literally "
                f"(used: that is what qrun ran) but {at}.base_features holds {len(base)} different ones"
            )
        return Part(alpha.names, where, None, kind="config"), warnings
    if alpha.placeholder is None:
        return alpha, []
    if base is not None:
        return Part(list(base), f"{at}.base_features", None, kind="base_features"), []
    missing = anchor.base_features_problem or f"{at} has no base_features"
    reason = f"{alpha.reason}, and no other source names them: {missing}"
    return Part(None, alpha.source, reason, AlphaNamesUnresolvedError.code, alpha.placeholder), []


def _alignment(
    order: list[str] | None, count: int | None, alpha: Part, dynamic: Part
) -> tuple[bool, str | None, str | None]:
    """``(is_aligned, reason, code)``; the code is the typed error a caller raises for an unconfirmed order."""
    if order is None:
        gaps = "; ".join(r for r in (alpha.reason, dynamic.reason) if r)
        code = alpha.code or dynamic.code or ConfigUnresolvedError.code
        return False, f"model_input_order unresolved: {gaps}", code
    if count is None:
        reason = f"model_input_order has {len(order)} names but the model's feature count is unknown"
        return False, reason, ModelFeatureCountUnknownError.code
    if len(order) != count:
        return (
            False,
            (
                f"model_input_order has {len(order)} names ({len(alpha.names or [])} alpha + "
                f"{len(dynamic.names or [])} dynamic) but the model has {count} features"
            ),
            FeatureCountMismatchError.code,
        )
    return True, None, None


def resolve_factor_order(
    anchor: SotaFactorExperiment,
    *,
    model_feature_count: int | None,
    weight_class_path: str | None,
    path_map: PathMap,
    access: AccessLog | None = None,
) -> FactorOrder:
    """Alpha + dynamic names in the order the executed config's loader feeds them to the model."""
    decision = decide_config(anchor, weight_class_path=weight_class_path)
    config, problem = parse_config(decision)
    rule: OrderRule | None = None
    warnings: list[str] = []
    if config is None or decision.name is None:
        alpha = Part(None, None, problem, ConfigUnresolvedError.code)
        dynamic = Part(None, None, f"not read: {problem}")
    else:
        layout = loader_layout(config, decision.name)
        rule = layout.rule
        filters = _column_filters(config, decision.name)
        alpha, warnings = _alpha_part(layout, anchor, decision.name)
        alpha = _apply_filters(alpha, filters, decision.name)
        dynamic = _dynamic_part(anchor, layout, path_map, access) if rule is not None else Part(None, None, None)
        dynamic = _apply_filters(dynamic, filters, decision.name)
    order = (
        combine_order(rule, alpha.names, dynamic.names)
        if rule is not None and alpha.names is not None and dynamic.names is not None
        else None
    )
    aligned, reason, code = _alignment(order, model_feature_count, alpha, dynamic)
    return FactorOrder(
        task_id=anchor.task_id,
        config_name=decision.name,
        config_reason=decision.reason,
        alpha158_factors=alpha.names,
        alpha158_source=alpha.source,
        alpha158_source_kind=alpha.kind if alpha.names is not None else None,
        alpha158_unresolved_reason=alpha.reason,
        dynamic_factors=dynamic.names,
        dynamic_source=dynamic.source,
        dynamic_unresolved_reason=dynamic.reason,
        model_input_order=order,
        model_input_order_rule=rule,
        model_input_order_rule_reason=RULE_REASONS[rule] if rule is not None else None,
        alpha158_count=len(alpha.names) if alpha.names is not None else None,
        dynamic_count=len(dynamic.names) if dynamic.names is not None else None,
        model_input_count=len(order) if order is not None else None,
        model_feature_count=model_feature_count,
        is_aligned=aligned,
        alignment_reason=reason,
        unresolved_code=code,
        warnings=warnings,
    )


def ensure_aligned(order: FactorOrder) -> None:
    """Raise :class:`FeatureCountMismatchError` when both counts are known and differ.

    Unresolved parts (missing parquet, placeholder names, unknown model) are gaps the bundle reports as
    ``selection_ready: false``; they are not a count mismatch.
    """
    if order.model_input_count is not None and order.model_feature_count is not None and not order.is_aligned:
        raise FeatureCountMismatchError(order.alignment_reason or "feature counts differ", path=order.dynamic_source)


def require_aligned(order: FactorOrder) -> None:
    """:func:`ensure_aligned`, and also fail an unconfirmed order with the typed error naming its gap."""
    ensure_aligned(order)
    if not order.is_aligned:
        cls = _ERRORS.get(order.unresolved_code or "", FactorOrderUnresolvedError)
        reason = f"model_input_order cannot be confirmed against the model: {order.alignment_reason}"
        raise cls(reason, path=order.dynamic_source)
