"""Shared fixtures. Tests that need ``../shared`` skip cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

from tests.helpers import REPO, SHARED, invoke, natural_image  # noqa: F401 (REPO: re-export)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not available")
    return SHARED


@pytest.fixture(scope="session")
def casia_dir(shared_dir: Path) -> Path:
    path = shared_dir / "bench" / "casia1-dev"
    if not (path / "images").is_dir():
        pytest.skip("casia1-dev is not available")
    return path


@pytest.fixture(scope="session")
def corpus_dir(shared_dir: Path) -> Path:
    path = shared_dir / "corpus"
    if not path.is_dir():
        pytest.skip("corpus is not available")
    return path


@pytest.fixture
def make_image():
    return natural_image


@pytest.fixture
def cli():
    """``cli(["localize", ...])`` runs forgectl in this process and returns the result."""
    return invoke
