"""Where the bundled genuine RD-Agent samples live, so a fresh checkout works with no configuration.

``$RD_ASSETS_SAMPLES`` wins; otherwise the repository's sibling ``../shared/samples_v3`` (how the project and
its CI are laid out). Their pickled workspace paths are those of a WSL run, mapped by ``SAMPLE_PATH_MAP``.
The three task ids are named here once, so tests, ``make dev`` and the docs agree on them.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_SAMPLES = "RD_ASSETS_SAMPLES"
REPO_DIR = Path(__file__).resolve().parents[2]
SAMPLES_DIR = Path(os.environ.get(ENV_SAMPLES) or REPO_DIR.parent / "shared" / "samples_v3")
SAMPLE_WORKSPACE_PREFIX = "/mnt/f/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace"
SAMPLE_PATH_MAP = f"{SAMPLE_WORKSPACE_PREFIX}={SAMPLES_DIR / 'workspaces'}"

PLAIN_TASK = "2026-03-02_09-15-27-118204"
"""FactorRDLoop, plain pickles, the fork's rendered dynamic config, LightGBM weights (25 features)."""
SIGNED_TASK = "2026-03-06_10-20-31-402117"
"""QuantRDLoop of rdagent 1.0, signed pickles, sota_model config, torch GeneralPTNN weights (23 features)."""
FIRST_ANCHOR_TASK = "2026-03-08_21-05-44-090311"
"""The fork's 4-step FactorRDLoop whose anchor is its first experiment (based only on the placeholder)."""
SAMPLE_TASKS = (PLAIN_TASK, SIGNED_TASK, FIRST_ANCHOR_TASK)
SAMPLE_SIGNING_KEY = "rdgen-sample-signing-key-0123456789abcdef"
"""rdagent's ``ARTIFACT_SIGNING_KEY`` of the signed sample (published in the samples' README)."""
