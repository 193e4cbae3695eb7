import pytest


@pytest.fixture
def counting():
    """Wrap a model so its calls are counted: returns (wrapped, counter_dict)."""

    def wrap(model):
        box = {"calls": 0}

        def m(x, t):
            box["calls"] += 1
            return model(x, t)

        return m, box

    return wrap
