import pytest
import torch

from gradkit_support.train import stop_requested


@pytest.mark.parametrize("training", [True, False])
def test_stop_requested_returns_the_check_and_restores_the_mode(training):
    model = torch.nn.Linear(2, 2).train(training)
    seen = []

    def check(m):
        seen.append(m.training)
        m.eval()
        return len(seen) > 1

    assert stop_requested(model, check) is False and model.training is training
    assert stop_requested(model, check) is True and model.training is training


def test_stop_requested_restores_the_mode_when_the_check_raises():
    model = torch.nn.Linear(2, 2).train()

    def boom(m):
        m.eval()
        raise RuntimeError("eval failed")

    with pytest.raises(RuntimeError, match="eval failed"):
        stop_requested(model, boom)
    assert model.training
