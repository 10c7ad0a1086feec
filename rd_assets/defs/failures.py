"""A typed error of the core as the ``dagster.Failure`` that ends the step: code and message, details as metadata.

The message may quote untrusted text, so the description shown in the UI escapes control and bidi
characters; the metadata keeps the exact (UTF-8 encodable) text.
"""

from __future__ import annotations

from dagster import AssetKey, Failure, MetadataValue

from rd_assets.core.errors import RdAssetsError
from rd_assets.core.text_safety import printable
from rd_assets.defs.metadata import text_or_null


def failure(exc: RdAssetsError, *, asset: AssetKey) -> Failure:
    """The step failure for ``exc``, met while resolving ``asset``."""
    return Failure(
        description=printable(f"{exc.code}: {exc.message}"),
        metadata={
            "error_code": MetadataValue.text(exc.code),
            "message": text_or_null(exc.message),
            "path": text_or_null(exc.path),
            "asset": MetadataValue.text(asset.to_user_string()),
        },
    )
