import warnings

import pytest


@pytest.fixture(autouse=True)
def _quiet_gymnasium():
    # the v5 MuJoCo envs declare unbounded observation boxes; check_env warns about that
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value is.*")
        yield
