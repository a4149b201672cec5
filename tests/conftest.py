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


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) on 127.0.0.1, shared by the session's tests, stopped after."""
    from s3_server import S3Server  # needs moto[server], from the dev extra

    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """This test's environment points S3 clients at the local server, with credentials."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server
