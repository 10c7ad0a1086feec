"""Client of the Results API: list tasks, pull a bundle into a local mirror (``rd-assets pull``).

Nothing here imports Dagster, FastAPI or the API's own modules: a consumer machine talks HTTP only.
"""

from __future__ import annotations

from rd_assets.client.http import RemoteTask, ResultsClient, RetryPolicy
from rd_assets.client.mirror import pull_bundle

__all__ = ["RemoteTask", "ResultsClient", "RetryPolicy", "pull_bundle"]
