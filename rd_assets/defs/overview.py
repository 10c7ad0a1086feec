"""Markdown overview tables on ``aistock_bundle``: the bundle of one task at a glance in the UI.

Every cell quotes untrusted text (factor names, paths, reasons), so each is escaped: control, bidi and
separator characters are shown as escapes (:func:`rd_assets.core.text_safety.printable`) and every
character markdown gives a meaning (``|``, ``*``, ``<``, backticks, ...) is backslash-escaped, so a name
cannot break the table, add a link or inject HTML.
"""

from __future__ import annotations

import re

from dagster import MetadataValue

from rd_assets.core.bundle.extract import BundleParts
from rd_assets.core.contracts.models import FactorRecord
from rd_assets.core.text_safety import printable

IC = "IC"
ANNUALIZED_RETURN = "1day.excess_return_with_cost.annualized_return"
ORDER_EDGE = 3
"""How many names of ``model_input_order`` to show from each end."""
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+!|~-])")
MISSING = "—"


def cell(value: object) -> str:
    """One table cell: ``—`` for a missing value, otherwise the escaped text on one line."""
    if value is None:
        return MISSING
    return _MARKDOWN.sub(r"\\\1", printable(str(value)))


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else cell(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _factor_row(factor: FactorRecord, code_relpaths: dict[str, str]) -> list[str]:
    metrics = factor.metrics or {}
    return [
        cell(factor.name),
        _number(metrics.get(IC)),
        _number(metrics.get(ANNUALIZED_RETURN)),
        cell(factor.hist_index),
        cell(code_relpaths.get(factor.name)),
    ]


def factors_table(parts: BundleParts) -> MetadataValue:
    code = {f.name: f.relpath for f in parts.factor_code.index.files if f.relpath in parts.factor_code.files}
    rows = [_factor_row(f, code) for f in parts.anchor.sota_factors]
    return MetadataValue.md(_table(["factor", "IC", "annualized return", "hist index", "code file"], rows))


def weight_table(parts: BundleParts) -> MetadataValue:
    info = parts.weight.info if parts.weight is not None else None
    model = parts.model.introspection if parts.model is not None else None
    row = [
        cell(info.resolved_model_weight_key if info else None),
        cell(info.sha256 if info else None),
        cell(info.size if info else None),
        cell(model.kind if model else None),
        cell(model.feature_count if model else None),
    ]
    return MetadataValue.md(_table(["weight key", "sha256", "bytes", "model kind", "feature count"], [row]))


def order_table(parts: BundleParts) -> MetadataValue:
    order = parts.factor_order
    names = order.model_input_order or []
    head, tail = names[:ORDER_EDGE], names[-ORDER_EDGE:] if len(names) > ORDER_EDGE else []
    row = [
        cell(order.config_name),
        cell(order.model_input_order_rule),
        cell(len(names) if order.model_input_order is not None else None),
        cell(", ".join(head) if head else None),
        cell(", ".join(tail) if tail else None),
    ]
    header = ["executed config", "order rule", "inputs", "first names", "last names"]
    return MetadataValue.md(_table(header, [row]))


def candidates_table(parts: BundleParts) -> MetadataValue:
    chosen = parts.selection.chosen_snapshot
    rows = [
        [
            cell(c.relpath) + (" (chosen)" if c.relpath == chosen else ""),
            cell(c.size),
            cell(c.hist_len),
            cell(f"{c.error.code}: {c.error.message}" if c.error else None),
        ]
        for c in parts.selection.candidates
    ]
    return MetadataValue.md(_table(["snapshot", "bytes", "hist length", "skipped because"], rows))


def overview_metadata(parts: BundleParts) -> dict[str, MetadataValue]:
    return {
        "factors_table": factors_table(parts),
        "weight_table": weight_table(parts),
        "order_table": order_table(parts),
        "candidates_table": candidates_table(parts),
    }
