"""How a qlib data loader turns the alpha and dynamic name lists into the model's input order.

Pure (no I/O, no pyarrow) so the verifier can recompute an order from a published ``factor_order.json``.
"""

from __future__ import annotations

from typing import Literal

OrderRule = Literal["alpha_then_parquet", "sorted_union", "alpha_only"]

RULE_REASONS: dict[OrderRule, str] = {
    "alpha_then_parquet": "CombinedAlpha158DynamicFactorsLoader joins the parquet onto the alpha frame: the alpha "
    "names in config order, then the parquet's feature columns in file order",
    "sorted_union": "qlib NestedDataLoader: a later loader's column replaces an earlier one of the same name, then "
    "sort_index(axis=1): every feature name (alpha + parquet) in code-point order",
    "alpha_only": "Alpha158DL alone: the alpha names in config order, no dynamic factors",
}


def combine_order(rule: OrderRule, alpha: list[str], dynamic: list[str]) -> list[str]:
    """The model's input columns under ``rule`` (``sorted`` on str is code-point order, as pandas sorts)."""
    if rule == "sorted_union":
        return sorted({*alpha, *dynamic})
    return [*alpha, *dynamic]
