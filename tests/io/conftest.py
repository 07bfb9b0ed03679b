"""Shared fixtures for the io tests: where the real Scanco files are."""

import os
from pathlib import Path

import pytest

# <repo root>/../shared/fixtures/scanco, repo root = the parent of tests/
_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "scanco"


@pytest.fixture(scope="session")
def scanco_dir() -> Path:
    """Folder of real Scanco files (env MICROARCH_SCANCO_FIXTURES overrides); skip if absent."""
    folder = Path(os.environ.get("MICROARCH_SCANCO_FIXTURES", _DEFAULT))
    if not (folder / "aluminum.aim").is_file():
        pytest.skip(f"Scanco fixtures not found at {folder}")
    return folder
