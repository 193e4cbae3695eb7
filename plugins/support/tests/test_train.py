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


def _zero_bigram(vocab=5):
    from gradkit_support.models import Bigram

    model = Bigram(vocab)
    with torch.no_grad():
        model.W.zero_()
    return model


def _fixed_batches(x, y):
    while True:
        yield x, y


def test_train_lm_one_step_by_hand_with_clipping_and_schedule():
    from gradkit_support.train import lm_loss, train_lm

    x, y = torch.tensor([[0, 1, 2]]), torch.tensor([[1, 2, 3]])
    model = _zero_bigram()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** (s + 1))  # lr 0.5, then 0.25
    # by hand: dL/dW[x_t] = (softmax(0) - onehot(y_t)) / 3 on rows 0, 1, 2; clipped to global norm 0.1
    g = torch.zeros(5, 5)
    for xt, yt in zip(x[0], y[0]):
        g[xt] += (torch.full((5,), 0.2) - torch.nn.functional.one_hot(yt, 5)) / 3
    g = g * (0.1 / g.norm())
    seen = []
    xs, ys = train_lm(model, opt, _fixed_batches(x, y), 1, scheduler=sched, clip_norm=0.1,
                      on_step=lambda s: seen.append((s, opt.param_groups[0]["lr"])),
                      eval_fn=lambda m: float(lm_loss(m, x, y).detach()))
    torch.testing.assert_close(model.W.detach(), -0.5 * g)
    assert seen == [(1, 0.25)]  # on_step runs after the scheduler step
    assert xs == [1] and ys[0] < torch.log(torch.tensor(5.0)).item()


def test_train_lm_evaluates_every_k_steps_and_after_the_last():
    from gradkit_support.train import train_lm

    model = _zero_bigram()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.tensor([[0, 1, 2]]), torch.tensor([[1, 2, 3]])
    xs, ys = train_lm(model, opt, _fixed_batches(x, y), 7, eval_every=3, clip_norm=None,
                      eval_fn=lambda m: float(m.W[0, 1].detach()))
    assert xs == [3, 6, 7] and ys[0] < ys[1] < ys[2]  # the target logit grows on a fixed batch
    with pytest.raises(ValueError, match="steps"):
        train_lm(model, opt, _fixed_batches(x, y), 0)
    with pytest.raises(ValueError, match="eval_every"):
        train_lm(model, opt, _fixed_batches(x, y), 2, eval_every=-1)


def test_next_token_logprobs_is_the_hand_computed_next_token_log_likelihood():
    import math

    import torch

    from gradkit_support.train import next_token_logprobs

    logits = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])  # (1, 3, V=3)
    ids = torch.tensor([[0, 2, 1]])
    got = next_token_logprobs(logits, ids)
    want = [2.0 - math.log(1 + math.e + math.e ** 2), 0.0 - math.log(math.e ** 3 + 2)]  # predicts ids[1], ids[2]
    assert got.shape == (1, 2) and torch.allclose(got, torch.tensor([want]), atol=1e-6)
