"""Shared fixtures: the recorded workloads live in ``../shared/workloads`` beside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_WORKLOADS = REPO_ROOT.parent / "shared" / "workloads"


@pytest.fixture
def shared_workloads() -> Path:
    if not SHARED_WORKLOADS.is_dir():
        pytest.skip(
            f"recorded workloads not found at {SHARED_WORKLOADS} (../shared/workloads)"
        )
    return SHARED_WORKLOADS
