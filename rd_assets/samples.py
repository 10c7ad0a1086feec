"""Where the bundled genuine RD-Agent samples live, so a fresh checkout works with no configuration.

``$RD_ASSETS_SAMPLES`` wins; otherwise the repository's sibling ``../shared/samples`` (how the project and
its CI are laid out). Their pickled workspace paths are those of a WSL run, mapped by ``SAMPLE_PATH_MAP``.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_SAMPLES = "RD_ASSETS_SAMPLES"
REPO_DIR = Path(__file__).resolve().parents[1]
SAMPLES_DIR = Path(os.environ.get(ENV_SAMPLES) or REPO_DIR.parent / "shared" / "samples")
SAMPLE_WORKSPACE_PREFIX = "/mnt/f/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace"
SAMPLE_PATH_MAP = f"{SAMPLE_WORKSPACE_PREFIX}={SAMPLES_DIR / 'workspaces'}"
