"""The Dagster preview and beta features rd-assets uses on purpose, opted into here and nowhere else.

* Partitioned asset checks (``AssetCheckSpec(partitions_def=...)``, preview): every check is evaluated per
  task; without a partitions definition the UI would show only the last task's result for all tasks.
* Source code references (``with_source_code_references``, beta): each asset links to the function that
  materializes it, which a person reading the graph needs.

Each warning is silenced by its exact message, so any other preview or beta feature still warns. The
filters are installed when :mod:`rd_assets.defs` is first imported, before any definition is built.
"""

import warnings

from dagster import BetaWarning, PreviewWarning

OPTED_IN: tuple[tuple[type[Warning], str], ...] = (
    (PreviewWarning, r"Specifying a partitions_def on an AssetCheckSpec is currently in preview"),
    (BetaWarning, r"Function `with_source_code_references` is currently in beta"),
    (BetaWarning, r"Class `LocalFileCodeReference` is currently in beta"),
    (BetaWarning, r"Class `CodeReferencesMetadataValue` is currently in beta"),
)

for category, message in OPTED_IN:
    warnings.filterwarnings("ignore", message=message, category=category)
