"""Shared fixtures: where the real data lives (outside the repo), and fast thread settings."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

# The shared folder beside the checkout; ADASWITCH_SHARED_DATA points elsewhere (e.g. from a clone
# elsewhere).
SHARED_DATA = Path(
    os.environ.get("ADASWITCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real GSM8K / DialogSum / GSM-Plus files kept beside the repo; tests skip without them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA
