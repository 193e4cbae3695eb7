"""Shared by every test directory of the repository (tests/, plugins/*/tests, envs/*/tests)."""

import sys

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op torch thread per test: the problems are tiny and the machines small and shared, where
    OpenMP threads only oversubscribe the cores. Torch is not imported here (tests/test_no_torch.py)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
