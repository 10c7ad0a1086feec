"""The Dagster layer of rd-assets: one partitioned multi-asset over the core extraction, its checks, a sensor,
a schedule. Importing it first opts into the preview and beta features it uses on purpose (one place)."""

from rd_assets.defs import dagster_opt_ins as _dagster_opt_ins  # noqa: F401  (before any definition is built)
