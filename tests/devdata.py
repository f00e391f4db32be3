"""The development data folder for tests: `AGENTFLOW_DATA`, else `shared/data` beside the clone.

Tests that read it mark themselves `@needs(...)` with the files they read, so that a clone with
no development data skips them and says which files are missing and where it looked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(
    os.environ.get("AGENTFLOW_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
).expanduser()


def needs(*files: str) -> pytest.MarkDecorator:
    """Skip unless every one of `files` (relative to the data folder; a glob too) is there."""
    missing = [name for name in files if not any(DATA.glob(name))]
    return pytest.mark.skipif(
        bool(missing),
        reason=f"needs the development data {', '.join(missing)} in {DATA} (set AGENTFLOW_DATA)",
    )
