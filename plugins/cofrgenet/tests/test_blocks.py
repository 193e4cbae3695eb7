"""Cffn, CAttnU, CAttnM, the swap into TinyGPT, the dyadic schedule, registration."""

import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import gradkit_core as gk
from gradkit_cofrgenet.blocks import (FFN, AsSelfAttention, CAttnM, CAttnU, Cffn, DyadicSchedule, cofrgenet_gpt,
                                      cofrgenetify, dyadic_depth, matched_hidden, param_groups)
from gradkit_cofrgenet.ladder import CoFrLadder, continued_fraction_nested
from gradkit_support.models import TinyGPT


def _n(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("gate", ["input", "ladders", "none"])
def test_cffn_equation_and_parameter_count(gate):
    torch.manual_seed(0)
    p, L, d = 12, 3, 4
    m = Cffn(p, n_ladders=L, depth=d, gate=gate)
    x = torch.randn(2, 5, p, dtype=torch.float64)
    m = m.double()
    x_hat = x if gate == "none" else torch.sigmoid(m.G(x)) * x
    a = torch.einsum("btp,ldp->btld", x_hat, m.ladders.weight) + m.ladders.bias
    z = continued_fraction_nested(a)
    want = m.U(x_hat if gate == "input" else x) + z @ m.V.T
    torch.testing.assert_close(m(x), want)
    n_gate = 0 if gate == "none" else p * p + p
    assert _n(m) == (p * p + p) + n_gate + L * d * p + L * d + L * p


def test_cffn_elementwise_equation():
    torch.manual_seed(0)
    m = Cffn(6, n_ladders=2, depth=3, mode="elementwise").double()
    x = torch.randn(4, 6, dtype=torch.float64)
    x_hat = torch.sigmoid(m.G(x)) * x
    z = continued_fraction_nested(x_hat[:, None, :, None] * m.ladders.weight + m.ladders.bias)  # (4, 2, 6)
    torch.testing.assert_close(m(x), m.U(x_hat) + (z * m.V).sum(1))


def test_cffn_ladders_matter_and_get_gradients():
    torch.manual_seed(0)
    m = Cffn(8)
    x = torch.randn(3, 8)
    y = m(x)
    with torch.no_grad():
        m.V.zero_()
    assert not torch.allclose(y, m(x))  # the ladder term contributes
    m = Cffn(8)
    m(x).pow(2).sum().backward()
    assert m.ladders.weight.grad.abs().sum() > 0 and m.G.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kw", [dict(gate="sometimes"), dict(mode="diag"), dict(depth=0), dict(n_ladders=0),
                                dict(eps=-1.0)])
def test_cffn_bad_hyperparameters(kw):
    with pytest.raises(ValueError):
        Cffn(8, **kw)


def test_cffn_bad_inputs():
    m = Cffn(8)
    with pytest.raises(ValueError, match="8"):
        m(torch.randn(2, 7))
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((2, 8), float("nan")))
    with pytest.raises(TypeError):
        m([[0.0] * 8])


def test_matched_hidden_matches_parameter_count():
    target = _n(Cffn(64))
    h = matched_hidden(64, target)
    assert abs(_n(FFN(64, h)) - target) <= 64 + 1
    with pytest.raises(ValueError):
        matched_hidden(0, 10)


@pytest.mark.parametrize("cls", [CAttnU, CAttnM])
def test_attention_replacements_are_causal(cls):
    torch.manual_seed(0)
    m = cls(8, block_size=10)
    x = torch.randn(2, 10, 8)
    y = m(x)
    x2 = x.clone()
    x2[:, 6:] += torch.randn(2, 4, 8)
    y2 = m(x2)
    torch.testing.assert_close(y[:, :6], y2[:, :6])
    assert not torch.allclose(y[:, 6:], y2[:, 6:])
    # shorter sequences use the leading block: same outputs as the prefix of a longer one
    torch.testing.assert_close(m(x[:, :4]), y[:, :4])


def test_cattnu_equation_depth2():
    torch.manual_seed(0)
    m = CAttnU(3, block_size=4, depth=2).double()
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    ys = []
    for e in range(2):
        y = m.w0[e][:, None] * x + 1.0 / (m.w[e, :, 0][:, None] * x + m.b[e, :, 0][:, None])
        u = torch.tril(m.mix[e].weight)
        ys.append(torch.einsum("ij,bjc->bic", u, y))
    torch.testing.assert_close(m(x), ys[0] * ys[1])
    l, d = 4, 3
    stored = _n(CAttnU(3, block_size=l, depth=d))
    effective = stored - l * (l - 1)  # the mixers' masked upper triangles never act
    assert effective == l * (2 * d + l + 1) + 2 * (d - 1) * l  # the paper's count + our ladder biases


def test_cattnm_weights_are_causal_distributions():
    torch.manual_seed(0)
    m = CAttnM(8, block_size=6)
    a = m.attention_weights(torch.randn(3, 6, 8))
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 6))
    assert (a.triu(1) == 0).all()
    assert _n(m) == 4 * 3 * 8 + 4 * 3 + 4 * 6 + 8 * 8


@pytest.mark.parametrize("cls", [CAttnU, CAttnM])
def test_attention_bad_inputs(cls):
    m = cls(8, block_size=5)
    with pytest.raises(ValueError, match="block_size"):
        m(torch.randn(1, 6, 8))
    with pytest.raises(ValueError):
        m(torch.randn(5, 8))  # no batch axis
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((1, 3, 8), float("inf")))
    with pytest.raises(ValueError):
        cls(8, block_size=0)


def test_cofrgenetify_tinygpt_swaps_and_trains():
    torch.manual_seed(0)
    base = TinyGPT(block_size=16, d_model=32, n_layer=2, n_head=4)
    n0 = _n(base)
    model = cofrgenetify(base, attn="m")
    assert all(isinstance(b.mlp, Cffn) for b in model.blocks)
    assert all(isinstance(b.attn, AsSelfAttention) and isinstance(b.attn.mixer, CAttnM) for b in model.blocks)
    assert _n(model) < n0
    ids = torch.randint(0, 256, (2, 16))
    logits, loss = model(ids, ids)
    assert logits.shape == (2, 16, 256) and torch.isfinite(loss)
    loss.backward()
    g = cofrgenet_gpt(block_size=16, d_model=32, n_layer=2, attn="u")
    assert isinstance(g.blocks[0].attn.mixer, CAttnU)
    assert g(ids[:, :5]).shape == (2, 5, 256)


def test_cofrgenetify_bad_requests():
    with pytest.raises(ValueError, match="unknown attention"):
        cofrgenetify(TinyGPT(block_size=8, d_model=16, n_layer=1), attn="x")
    with pytest.raises(ValueError, match="no FFN"):
        cofrgenetify(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(ValueError, match="nothing to replace"):
        cofrgenetify(TinyGPT(block_size=8, d_model=16, n_layer=1), ffn=False)
    with pytest.raises(TypeError):
        cofrgenetify("gpt")
    wrapped = AsSelfAttention(CAttnU(8, 4))
    x = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="self-attention"):
        wrapped(x, torch.randn(1, 4, 8), x)
    with pytest.raises(ValueError, match="causal"):
        wrapped(x, x, x, attn_mask=torch.zeros(4, 4, dtype=torch.bool))


def test_dyadic_depth_schedule():
    assert [dyadic_depth(s, 16, 5) for s in range(16)] == [0] * 8 + [1] * 4 + [2] * 2 + [3] + [4]
    assert dyadic_depth(999, 16, 3) == 3
    with pytest.raises(ValueError):
        dyadic_depth(-1, 16, 5)
    with pytest.raises(ValueError):
        dyadic_depth(0, 0, 5)


def test_dyadic_schedule_freezes_then_releases():
    torch.manual_seed(0)
    model = cofrgenet_gpt(block_size=8, d_model=16, n_layer=1)
    sched = DyadicSchedule(model, total_steps=8)
    lad = model.blocks[0].mlp.ladders
    assert lad.trainable_depth == 0
    w0 = lad.weight.detach().clone()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-2)
    ids = torch.randint(0, 256, (2, 8))
    for step in range(8):
        opt.zero_grad()
        model(ids, ids)[1].backward()
        opt.step()
        sched(step + 1)
        if step + 1 == 4:  # linear parts only so far
            assert torch.equal(lad.weight.detach(), w0)
    assert lad.trainable_depth == 3  # 8 steps: depth 1 from step 4, 2 from step 6, 3 at step 7 (0-based)
    assert not torch.equal(lad.weight.detach()[:, :3], w0[:, :3])
    assert torch.equal(lad.weight.detach()[:, 3:], w0[:, 3:])
    with pytest.raises(ValueError, match="no CoFrLadder"):
        DyadicSchedule(TinyGPT(block_size=8, d_model=16, n_layer=1), 10)


def test_param_groups_keep_ladders_out_of_weight_decay():
    model = cofrgenet_gpt(block_size=8, d_model=16, n_layer=1)
    decay, no_decay = param_groups(model, 0.1)
    ids = {id(p) for p in decay["params"]}
    for m in model.modules():
        if isinstance(m, CoFrLadder):
            assert all(id(p) not in ids for p in m.parameters())
    assert id(model.blocks[0].mlp.U.weight) in ids
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_components_are_registered():
    for name, target in [("cofr-ladder", "gradkit_cofrgenet.ladder:CoFrLadder"),
                         ("cffn", "gradkit_cofrgenet.blocks:Cffn"), ("cattn-u", "gradkit_cofrgenet.blocks:CAttnU"),
                         ("cattn-m", "gradkit_cofrgenet.blocks:CAttnM"),
                         ("cofrgenet-gpt", "gradkit_cofrgenet.blocks:cofrgenet_gpt")]:
        assert gk.info(name, kind="architectures").target == target
    assert gk.info("cofrgenet", kind="reproductions").target == "gradkit_cofrgenet.reproduce:run"
    assert gk.info("cofrgenet", kind="benchmarks").target == "gradkit_cofrgenet.bench:run"
    m = gk.create("cffn", 16, kind="architectures")
    assert isinstance(m, Cffn) and m.gate_mode == "input"


def test_entry_point_module_does_not_import_torch():
    code = "import sys, gradkit_cofrgenet; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_custom_backward_is_faster_than_autograd_through_the_recursion():
    """Reduced form of the benchmark claim: interleaved, CPU time, median of 7, d = 4, 8, 16."""
    import statistics

    from gradkit_cofrgenet.bench import LADDERS, _fwd_bwd, _inputs

    for d in (4, 8, 16):
        a = _inputs(65536, d, seed=d)
        w = torch.randn(len(a))
        times = {k: [] for k in LADDERS}
        for fn in LADDERS.values():
            _fwd_bwd(fn, a, w)
        for _ in range(7):
            for k, fn in LADDERS.items():
                times[k].append(_fwd_bwd(fn, a, w))
        med = {k: statistics.median(v) for k, v in times.items()}
        assert med["custom"] < med["autograd-continuant"], (d, med)
        assert med["custom"] < med["autograd-nested"], (d, med)


def test_reduced_reproduction_cffn_competitive_with_fewer_parameters():
    """Reduced form of the reproduction's headline claim (a 1-layer d=32 byte-level GPT, 200 steps, 2 seeds):
    the Cffn model reaches the 4x-FFN model's validation loss within 4 % with < 0.8x its parameters."""
    from gradkit_cofrgenet.reproduce import lm_run

    cfg = dict(d=32, layers=1, heads=2, block=32, batch=8, steps=200, warmup=20, lr=3e-3, eval_batches=4,
               corpus=100_000)
    runs = {n: [lm_run(n, cfg, s, 3e-3) for s in (0, 1)] for n in ("ffn-4x", "cffn")}
    mean = {n: sum(r["val_loss"] for r in rs) / 2 for n, rs in runs.items()}
    assert all(r["finite"] for rs in runs.values() for r in rs)
    assert mean["ffn-4x"] < 3.0  # learned well past the unigram level (ln 256 = 5.5 at the start)
    assert mean["cffn"] <= 1.04 * mean["ffn-4x"], mean
    assert runs["cffn"][0]["params"] < 0.8 * runs["ffn-4x"][0]["params"]
