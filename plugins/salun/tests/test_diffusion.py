"""SalUn for class-conditional diffusion: the forget loss, the mask, masked weights, bad input."""

import pytest
import torch

from gradkit_salun.diffusion import SalUnDiffusion, Schedule, TinyCondEps, eps_loss, salun_forget_loss


def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 64, generator=g) * 2 - 1
    c = torch.randint(0, 10, (n,), generator=g)
    return x, c


def test_forget_loss_targets_the_next_class_with_stopgrad():
    torch.manual_seed(0)
    model, sched = TinyCondEps(hidden=32, emb=16), Schedule(20)
    x, _ = _data()
    cf = torch.zeros(len(x), dtype=torch.long)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    loss = salun_forget_loss(model, sched, x, cf, g1, 10)
    t = torch.randint(0, sched.T, (len(x),), generator=g2)
    noise = torch.randn(x.shape, generator=g2)
    xt = sched.q_sample(x, t, noise)
    by_hand = ((model(xt, t, cf) - model(xt, t, torch.ones_like(cf))) ** 2).mean()
    torch.testing.assert_close(loss, by_hand)
    loss.backward()
    emb_grad = model.cls.weight.grad
    assert emb_grad[0].abs().sum() > 0, "the forgotten class embedding receives gradient"
    assert emb_grad[1].abs().sum() == 0, "the target class c' = c_f + 1 is behind a stop-gradient"


def test_masked_weights_unchanged_and_mask_is_global_top_ratio():
    torch.manual_seed(0)
    model, sched = TinyCondEps(hidden=32, emb=16), Schedule(20)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, c = _data()
    forget = [(x[:8], torch.zeros(8, dtype=torch.long))]
    retain = [(x[8:], c[8:])]
    un = SalUnDiffusion(model, schedule=sched, ratio=0.3, lr=1e-2)
    un.unlearn(forget, retain, max_steps=5)
    n_total = sum(p.numel() for p in model.parameters())
    n_ones = int(sum(m.sum() for m in un.mask.values()))
    assert n_ones == int(0.3 * n_total)
    moved = 0
    for n, p in model.named_parameters():
        m = un.mask[n].bool()
        assert torch.equal(p.detach()[~m], before[n][~m]), f"masked-out weights of {n} moved"
        moved += int((p.detach()[m] != before[n][m]).sum())
    assert moved > 0


def test_ga_objective_raises_forget_eps_loss():
    torch.manual_seed(0)
    model, sched = TinyCondEps(hidden=32, emb=16), Schedule(20)
    x, _ = _data()
    cf = torch.zeros(len(x), dtype=torch.long)
    loss0 = float(eps_loss(model, sched, x, cf, torch.Generator().manual_seed(1)).detach())
    SalUnDiffusion(model, schedule=sched, ratio=1.0, objective="ga", lr=1e-2).unlearn([(x, cf)], max_steps=20)
    assert float(eps_loss(model, sched, x, cf, torch.Generator().manual_seed(1)).detach()) > loss0


def test_bad_input():
    with pytest.raises(TypeError, match="num_classes"):
        SalUnDiffusion(torch.nn.Linear(2, 2))
    model = TinyCondEps(hidden=8, emb=8)
    with pytest.raises(ValueError, match="objective"):
        SalUnDiffusion(model, objective="npo")
    with pytest.raises(ValueError, match="forget"):
        SalUnDiffusion(model).unlearn([], [(torch.zeros(2, 64), torch.zeros(2, dtype=torch.long))])


def test_nonfinite_images_and_bad_classes_raise_and_leave_the_model():
    torch.manual_seed(0)
    model, sched = TinyCondEps(hidden=16, emb=8), Schedule(20)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, c = _data()
    xn = x.clone()
    xn[1, 3] = float("nan")
    good = (x[:8], torch.zeros(8, dtype=torch.long))
    for forget, msg in (([good, (xn[:8], good[1])], "non-finite"),
                        ([good, (x[:8], torch.full((8,), 10))], "out of range")):
        with pytest.raises(ValueError, match=msg):
            SalUnDiffusion(model, schedule=sched, lr=1e-2).unlearn(forget, [(x[8:], c[8:])], max_steps=3)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="retain"):
        SalUnDiffusion(model, schedule=sched).unlearn([good], None, max_steps=3)


def test_evaluation_counts_nonfinite_samples_apart(monkeypatch):
    """A collapsed model's NaN samples are not 'forgotten': the judge's argmax of NaN is class 0, so
    the old evaluation reported UA 0.0 for GA; now UA is NaN and `nonfinite` says why."""
    import gradkit_salun.diffusion as D
    import gradkit_salun.reproduce_diffusion as RD

    calls = {"n": 0}

    def nan_sample(model, sched, c, shape, **kw):
        calls["n"] += 1
        return torch.full((len(c), *shape), float("nan"))

    monkeypatch.setattr(D, "sample", nan_sample)
    monkeypatch.setattr(D, "train_ddpm", lambda model, *a, **k: model.eval())
    monkeypatch.setattr(D.SalUnDiffusion, "unlearn", lambda self, *a, **k: self.model.eval())
    res = RD.run(quick=True, progress=False)
    for row in res.rows:
        assert row["nonfinite"] == 1.0 and row["retain_acc"] == 0.0
        assert row["UA"] != row["UA"]  # NaN
    assert calls["n"] > 0
