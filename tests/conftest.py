from pathlib import Path

import pytest
import torch

REFDATA = Path(__file__).resolve().parents[2] / "shared" / "refdata"


@pytest.fixture(scope="session")
def refdata() -> Path:
    if not REFDATA.is_dir():
        pytest.fail(f"reference numbers not found at {REFDATA} (shared/ must sit beside the checkout)")
    return REFDATA


@pytest.fixture(autouse=True)
def _few_threads():
    # The CI machine has 2 cores; keep tests from oversubscribing them.
    torch.set_num_threads(2)
