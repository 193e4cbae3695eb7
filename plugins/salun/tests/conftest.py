import pytest
import torch

from gradkit_support.data import digits, loader
from gradkit_support.models import MLP

torch.set_num_threads(1)  # the test machine is small and shared


@pytest.fixture(scope="session")
def digit_data():
    torch.set_num_threads(1)
    return digits(test_fraction=0.22, seed=0)


@pytest.fixture
def small_sets(digit_data):
    xtr, ytr, _, _ = digit_data
    return (xtr[:32], ytr[:32]), (xtr[32:160], ytr[32:160])


@pytest.fixture
def make_mlp():
    def make(seed: int = 0):
        torch.manual_seed(seed)
        return MLP([64, 32, 10])

    return make


@pytest.fixture
def f_loader(small_sets):
    (xf, yf), _ = small_sets
    return loader(xf, yf, batch_size=16, seed=0)


@pytest.fixture
def r_loader(small_sets):
    _, (xr, yr) = small_sets
    return loader(xr, yr, batch_size=32, seed=0)
