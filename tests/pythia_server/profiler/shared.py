"""Where the shared recorded workloads are (CI: ../shared/workloads beside the repository)."""

from __future__ import annotations

from pathlib import Path


def shared_workloads() -> Path | None:
    root = Path(__file__).resolve().parents[3]
    candidate = root.parent / "shared" / "workloads"
    return candidate if candidate.is_dir() else None
