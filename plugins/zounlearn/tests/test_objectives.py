import copy
import math

import pytest
import torch

import gradkit_core as gk
from gradkit_core.testing.unlearners import UnlearnerConformance

from gradkit_zounlearn.attacks import quantization_recovery, quantize_rtn_, relearn_attack, rtn_quantize
from gradkit_zounlearn.facts import answer_mask, fact_corpus, knowmem
from gradkit_zounlearn.objectives import (
    LMUnlearner,
    graddiff_loss,
    mean_nll,
    npo_loss,
    sequence_logprob,
)

IDS = torch.tensor([[0, 3, 5, 2, 6], [4, 4, 1, 0, 2]])
MASK = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)


def _hand_logp(W, ids, mask):
    P = torch.log_softmax(W.double(), -1)
    out = []
    for b in range(ids.shape[0]):
        out.append(sum(float(P[ids[b, t - 1], ids[b, t]]) for t in range(1, ids.shape[1]) if mask[b, t]))
    return out


def test_sequence_logprob_and_mean_nll_by_hand(bigram):
    m = bigram(seed=1)
    want = _hand_logp(m.W.detach(), IDS, MASK)
    assert sequence_logprob(m, IDS, MASK).tolist() == pytest.approx(want, rel=1e-5)
    assert float(mean_nll(m, IDS, MASK).detach()) == pytest.approx(-sum(want) / int(MASK[:, 1:].sum()), rel=1e-5)


def test_npo_and_graddiff_equal_their_formulas():
    lp, lref = torch.tensor([-3.0, -1.5, -7.0]), torch.tensor([-2.0, -2.5, -6.0])
    beta, lam, r = 0.1, 2.0, torch.tensor(0.7)
    want = (2 / beta) * sum(math.log(1 + math.exp(a - b) ** beta) for a, b in zip(lp.tolist(), lref.tolist())) / 3
    assert float(npo_loss(lp, lref, beta)) == pytest.approx(want, rel=1e-6)
    assert float(npo_loss(lp, lref, beta, r, lam)) == pytest.approx(want + 1.4, rel=1e-6)
    assert float(graddiff_loss(torch.tensor(2.5), r, lam)) == pytest.approx(-2.5 + 1.4)
    assert float(graddiff_loss(torch.tensor(2.5), None)) == -2.5
    with pytest.raises(ValueError, match="beta"):
        npo_loss(lp, lref, 0.0)


def test_npo_gradient_at_the_reference_is_gradient_ascent_on_the_sequence_likelihood(bigram):
    """d/dtheta (2/beta) log(1 + e^{beta D}) = 2 sigmoid(beta D) dD = dD at D = 0 (theta = ref): NPO starts
    as gradient ascent on the summed negative log-likelihood (averaged over samples)."""
    m = bigram(seed=2)
    ul = LMUnlearner(m, objective="npo", beta=0.5, lam=0.0)
    ul.loss({"input_ids": IDS, "forget_mask": MASK}).backward()
    g_npo = m.W.grad.clone()
    m.W.grad = None
    sequence_logprob(m, IDS, MASK).mean().backward()
    assert torch.allclose(g_npo, m.W.grad, atol=1e-6)


def test_graddiff_loss_through_the_unlearner(bigram):
    m = bigram(seed=3)
    ul = LMUnlearner(m, objective="graddiff", lam=0.5)
    retain = torch.tensor([[1, 2, 3, 4]])
    got = float(ul.loss({"input_ids": IDS, "forget_mask": MASK}, retain).detach())
    fn = -sum(_hand_logp(m.W.detach(), IDS, MASK)) / int(MASK[:, 1:].sum())
    rn = -sum(_hand_logp(m.W.detach(), retain, torch.ones_like(retain, dtype=torch.bool))) / 3
    assert got == pytest.approx(-fn + 0.5 * rn, rel=1e-5)


@pytest.mark.parametrize("opt", ["adamw", "sign-sgd", "sign-adam", "zo", "hybrid-fo-zo"])
def test_every_optimizer_grade_lowers_forget_likelihood(bigram, opt):
    m = bigram(seed=4)
    f = [{"input_ids": IDS, "forget_mask": MASK}]
    before = float(sequence_logprob(m, IDS, MASK).sum().detach())
    kw = {"num_queries": 4} if opt in ("zo", "hybrid-fo-zo") else {}
    LMUnlearner(m, objective="npo", optimizer=opt, lr=0.05, lam=0.0, optimizer_kwargs=kw).unlearn(f, max_steps=20)
    assert float(sequence_logprob(m, IDS, MASK).sum().detach()) < before - 1.0


def test_unlearner_errors(bigram):
    with pytest.raises(ValueError, match="forget set is empty"):
        LMUnlearner(bigram(), objective="graddiff").unlearn([], [IDS])
    with pytest.raises(ValueError, match="retain"):
        LMUnlearner(bigram(), objective="npo", lam=1.0).unlearn([IDS], None)
    with pytest.raises(ValueError, match="objective"):
        LMUnlearner(bigram(), objective="rmu")
    with pytest.raises(ValueError, match="optimizer"):
        LMUnlearner(bigram(), optimizer="lbfgs")
    with pytest.raises(ValueError, match="loss_mask"):
        sequence_logprob(bigram(), IDS, MASK[:, :3])
    with pytest.raises(ValueError, match="forget_mask"):  # the convention's name, in every LM unlearner
        LMUnlearner(bigram(), lam=0.0).unlearn([{"input_ids": IDS, "loss_mask": MASK}])
    for bad in ({"lr": float("nan")}, {"beta": float("inf")}, {"lam": -1.0},
                {"optimizer": "zo", "optimizer_kwargs": {"mu": float("nan")}}):
        with pytest.raises(ValueError):
            LMUnlearner(bigram(), **bad)


# ---------------------------------------------------------------------- issue 12 items
@pytest.mark.parametrize("objective", ["npo", "graddiff"])
def test_all_false_forget_mask_raises_and_changes_nothing(bigram, objective):
    """An all-False mask used to let NPO / GradDiff train on the retain term only."""
    m = bigram(seed=4)
    w0 = m.W.detach().clone()
    bad = torch.zeros_like(MASK)
    bad[0, 2] = True  # sample 0 fine, sample 1 has nothing to forget
    for mask in (torch.zeros_like(MASK), bad):
        f = [{"input_ids": IDS, "forget_mask": MASK}, {"input_ids": IDS, "forget_mask": mask}]
        with pytest.raises(ValueError, match="forget_mask"):
            LMUnlearner(m, objective=objective, lr=0.05).unlearn(f, [IDS], max_steps=4)
        assert torch.equal(m.W.detach(), w0)


class _Probe(torch.nn.Module):
    """A bigram LM with dropout that records (training, grad enabled) at every forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.W = torch.nn.Parameter(torch.randn(7, 7))
        self.drop = torch.nn.Dropout(0.5)
        self.calls = []

    def forward(self, ids):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.drop(self.W[ids])


@pytest.mark.parametrize("opt", ["zo", "hybrid-fo-zo"])
def test_zo_losses_are_evaluated_in_eval_mode_without_a_graph(opt):
    """Dropout noise used to enter the ZO loss differences (model in train mode) and every ZO closure
    built an autograd graph."""
    m = _Probe()
    f = [{"input_ids": IDS, "forget_mask": MASK}]
    LMUnlearner(m, objective="graddiff", optimizer=opt, lr=1e-3, lam=0.0,
                optimizer_kwargs={"period": 1} if opt == "hybrid-fo-zo" else {}).unlearn(f, max_steps=4, seed=0)
    zo_calls = [c for c in m.calls if not c[1]]
    fo_calls = [c for c in m.calls if c[1]]
    assert zo_calls and all(not training for training, _ in zo_calls)
    if opt == "hybrid-fo-zo":
        assert fo_calls and all(training for training, _ in fo_calls)  # first-order steps train as usual
    else:
        assert not fo_calls


def test_graddiff_with_lam_zero_is_the_gradient_ascent(bigram):
    """One LM gradient ascent: graddiff with lam=0 needs no retain data and minimises -mean NLL (the
    registered lm-ga of codeeraser is gone; its CU with lam=0 is the same loss)."""
    m = bigram(seed=5)
    ul = LMUnlearner(m, objective="graddiff", lam=0.0, optimizer="sgd", lr=0.1)
    g = torch.autograd.grad(-mean_nll(m, IDS, MASK), [m.W])[0]
    w0 = m.W.detach().clone()
    ul.unlearn([{"input_ids": IDS, "forget_mask": MASK}], max_steps=1)
    assert torch.allclose(m.W.detach(), w0 - 0.1 * g, atol=1e-6)
    assert ul.last_run == {**ul.last_run, "steps": 1, "stopped_by": "max_steps"}


def test_rtn_error_bound_levels_and_fixed_points():
    torch.manual_seed(0)
    w = torch.randn(6, 70)  # 70 = 2 full groups of 32 + a padded group of 6
    q = rtn_quantize(w, bits=4, group_size=32)
    wp = torch.cat([w, torch.zeros(6, 26)], 1).view(6, 3, 32)
    s = wp.abs().amax(-1) / 7
    err = (torch.cat([w - q, torch.zeros(6, 26)], 1).view(6, 3, 32)).abs().amax(-1)
    assert (err <= s / 2 + 1e-6).all()
    qq = torch.cat([q, torch.zeros(6, 26)], 1).view(6, 3, 32)
    assert all(len(torch.unique(torch.round(qq[i, j] / s[i, j]))) <= 16 for i in range(6) for j in range(3))
    assert torch.allclose(rtn_quantize(q, 4, 32), q, atol=1e-6)  # already on the grid: unchanged
    with pytest.raises(ValueError, match="bits"):
        rtn_quantize(w, bits=1)


def test_rtn_rounds_sub_half_bin_update_of_on_grid_weights_back_to_original():
    """The quantization attack's mechanism (Zhang et al. 2024) used by the reproduction: weights on the int4 grid
    moved by less than half a bin (the group maximum kept in place) are rounded back exactly to the original,
    while a move past half a bin changes the code."""
    torch.manual_seed(1)
    w0 = rtn_quantize(torch.randn(4, 64), bits=4, group_size=32)  # the released model: on the grid
    s = w0.view(4, 2, 32).abs().amax(-1, keepdim=True) / 7
    is_max = w0.view(4, 2, 32).abs() == w0.view(4, 2, 32).abs().amax(-1, keepdim=True)
    delta = (torch.rand(4, 2, 32) * 2 - 1) * 0.45 * s  # |delta| < s/2 everywhere
    delta = torch.where(is_max, torch.zeros_like(delta), delta).view(4, 64)
    assert torch.allclose(rtn_quantize(w0 + delta, 4, 32), w0, atol=1e-6)  # full "recovery"
    big = torch.zeros(4, 64)
    j = int((~is_max.view(4, 64)[0]).nonzero()[0])
    big[0, j] = 0.6 * float(s.view(4, 2)[0, j // 32]) * (1 if w0[0, j] <= 0 else -1)
    assert not torch.allclose(rtn_quantize(w0 + big, 4, 32), w0, atol=1e-6)


def test_quantize_model_weights_only_and_recovery_metric():
    from gradkit_support.models import TinyGPT

    torch.manual_seed(0)
    m = TinyGPT(block_size=8, d_model=16, n_layer=1, n_head=2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    quantize_rtn_(m)
    after = m.state_dict()
    assert not torch.equal(after["tok.weight"], before["tok.weight"])
    assert torch.equal(after["ln_f.weight"], before["ln_f.weight"])  # 1-D params stay full precision
    assert torch.equal(after["blocks.0.mlp.0.bias"], before["blocks.0.mlp.0.bias"])
    assert after["head.weight"].data_ptr() == after["tok.weight"].data_ptr()
    m2 = TinyGPT(block_size=8, d_model=16, n_layer=1, n_head=2)
    score = lambda mm: float(mm.tok.weight.detach().abs().sum())  # noqa: E731
    rec = quantization_recovery(m2, score)
    q = quantize_rtn_(copy.deepcopy(m2))
    assert rec == pytest.approx(score(q) - score(m2))


def test_relearn_attack_fine_tunes_a_copy(bigram):
    m = bigram(seed=5)
    w0 = m.W.detach().clone()
    r = relearn_attack(m, [(IDS, MASK)], steps=20, lr=0.05)
    assert torch.equal(m.W.detach(), w0)
    assert float(mean_nll(r, IDS, MASK).detach()) < float(mean_nll(m, IDS, MASK).detach()) - 0.3
    with pytest.raises(ValueError, match="batch"):
        relearn_attack(m, [])


def test_fact_corpus_and_knowmem(bigram):
    d = fact_corpus(5, 32, seed=0)
    assert d["input_ids"].shape == (15, 32) and int(d["value_mask"].sum()) == 15
    am = answer_mask(d)
    for ids, vm, a in zip(d["input_ids"], d["value_mask"], am):
        s = bytes(ids.tolist()).decode()
        pos = int(vm.nonzero())
        assert s[pos - 1] == " " and s[pos].isalpha() and s.rstrip("\n").endswith(".")
        # the answer runs from the value to the sentence end (plus the first newline that ends it)
        assert bytes(ids[a].tolist()).decode() == s[pos:].rstrip("\n") + "\n"
    # a model that always predicts the true value byte scores 1, one that never does scores 0
    class Oracle(torch.nn.Module):
        def forward(self, ids):
            nxt = torch.cat([ids[:, 1:], ids[:, -1:]], 1)
            return torch.nn.functional.one_hot(nxt, 256).float()

    assert knowmem(Oracle(), d) == 1.0
    assert knowmem(bigram(vocab=256), d) < 0.3


def test_registered_unlearners():
    from gradkit_support.models import TinyGPT

    m = TinyGPT(block_size=8, d_model=16, n_layer=1, n_head=2)
    u = gk.create("npo", m, kind="unlearners")
    assert (u.objective, u.beta, u.lam, u.optimizer_spec) == ("npo", 0.1, 1.0, "adamw")
    assert gk.create("graddiff", m, kind="unlearners").objective == "graddiff"


class _Loader:
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


@pytest.mark.parametrize("name,kw", [("npo", {}), ("graddiff", {}), ("graddiff", {"lam": 0.0}),
                                     ("npo", {"optimizer": "hybrid-fo-zo", "optimizer_kwargs": {"num_queries": 2}}),
                                     ("npo", {"optimizer": "zo"})])
class TestConformance(UnlearnerConformance):
    unlearn_kwargs = {"max_steps": 3}

    @pytest.fixture(autouse=True)
    def _name(self, name, kw):
        self.component = name
        self.component_kwargs = {"lr": 1e-3, "max_steps": 4, **kw}  # max_steps: the default budget (kept small)
        self.uses_retain = kw.get("lam", 1.0) > 0

    @pytest.fixture
    def make_model(self):
        from gradkit_support.models import TinyGPT

        def make():
            torch.manual_seed(0)
            return TinyGPT(block_size=16, d_model=16, n_layer=1, n_head=2)

        return make

    @pytest.fixture
    def forget_loader(self):
        g = torch.Generator().manual_seed(0)
        return _Loader([torch.randint(0, 256, (2, 16), generator=g) for _ in range(2)])

    @pytest.fixture
    def retain_loader(self):
        g = torch.Generator().manual_seed(1)
        return _Loader([{"input_ids": torch.randint(0, 256, (2, 16), generator=g)} for _ in range(2)])
