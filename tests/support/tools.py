"""Command-line tools the end-to-end tests drive (openssl, curl, swaks)."""

from __future__ import annotations

import shutil

import pytest


def tool(name: str) -> str:
    """The path of ``name``, or the test is skipped (.ci/run installs them all)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


__all__ = ["tool"]
