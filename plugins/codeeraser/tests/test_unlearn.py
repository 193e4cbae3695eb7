import copy
import math

import pytest
import torch

import gradkit_core as gk
from gradkit_core.testing.unlearners import UnlearnerConformance

from gradkit_codeeraser.metrics import extraction_likelihood, memorization_accuracy
from gradkit_codeeraser.unlearn import CodeEraser

IDS = torch.tensor([[0, 3, 5, 2, 6, 1], [4, 4, 1, 0, 2, 3]])
SEC = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)


def _hand(W, ref_W, ids, sec, mode, gamma=0.1, lam=0.1, sign=-1, reduction="batchmean"):
    """The paper's forget loss written out with explicit loops and math.log; the KL term is summed over
    positions and divided by the batch size (official ``batchmean``) or averaged over positions."""
    P = torch.softmax(W.double(), -1)
    Q = torch.softmax(ref_W.double(), -1)
    nll_s, nll_c, kl_s, kl_all = [], [], [], []
    for b in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            prev, cur = int(ids[b, t - 1]), int(ids[b, t])
            nll = -math.log(float(P[prev, cur]))
            kl = sum(float(Q[prev, v]) * math.log(float(Q[prev, v]) / float(P[prev, v])) for v in range(W.shape[1]))
            kl_all.append(kl)
            if sec[b, t]:
                nll_s.append(nll)
                kl_s.append(kl)
            else:
                nll_c.append(nll)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    B = ids.shape[0]
    klr = (lambda xs: sum(xs) / B) if reduction == "batchmean" else mean  # noqa: E731
    all_nll = nll_s + nll_c
    if mode == "ga":
        return -mean(all_nll)
    if mode == "cu":
        return -mean(all_nll) + sign * lam * klr(kl_all)
    if mode == "ssga":
        return -mean(nll_s) + gamma * mean(nll_c)
    return -mean(nll_s) + gamma * mean(nll_c) + sign * lam * klr(kl_s)


@pytest.mark.parametrize("mode", ["ga", "cu", "ssga", "codeeraser"])
@pytest.mark.parametrize("sign", [-1, 1])
@pytest.mark.parametrize("reduction", ["batchmean", "token_mean"])
def test_forget_loss_equals_the_papers_formula(bigram, mode, sign, reduction):
    ref = bigram(seed=1)
    model = bigram(seed=2)
    kw = {"mode": "cu", "lam": 0.0} if mode == "ga" else {"mode": mode, "lam": 0.7}
    ul = CodeEraser(model, ref_model=ref, gamma=0.3, kl_sign_forget=sign, kl_reduction=reduction, **kw)
    got = float(ul.forget_loss(IDS, None, SEC).detach())
    want = _hand(model.W.detach(), ref.W.detach(), IDS, SEC, mode, gamma=0.3, lam=0.7, sign=sign, reduction=reduction)
    assert got == pytest.approx(want, rel=1e-5)


def test_kl_default_is_the_official_batchmean_scale(bigram):
    """The default KL is a per-sample sum over positions (torch's batchmean), (T-1)x the per-token mean
    when every position has the same KL; the old per-token mean is kept as kl_reduction='token_mean'."""
    ref, model = bigram(seed=1), bigram(seed=2)
    ids = torch.tensor([[3, 3, 3, 3, 3, 3]])  # every position predicts from row 3: identical KL_t
    a = CodeEraser(model, ref_model=ref, mode="cu").retain_loss(ids)
    b = CodeEraser(model, ref_model=ref, mode="cu", kl_reduction="token_mean").retain_loss(ids)
    assert float(a.detach()) == pytest.approx(5 * float(b.detach()), rel=1e-6)
    with pytest.raises(ValueError, match="kl_reduction"):
        CodeEraser(model, kl_reduction="mean")


def test_retain_loss_is_lam_alpha_kl_and_absent_for_ga(bigram):
    ref, model = bigram(seed=1), bigram(seed=2)
    ul = CodeEraser(model, ref_model=ref, mode="codeeraser", lam=0.5, alpha=3.0)
    P, Q = torch.softmax(model.W.detach().double(), -1), torch.softmax(ref.W.detach().double(), -1)
    kls = [float((Q[p] * (Q[p] / P[p]).log()).sum()) for row in IDS for p in row[:-1].tolist()]
    assert float(ul.retain_loss(IDS).detach()) == pytest.approx(1.5 * sum(kls) / IDS.shape[0], rel=1e-5)
    assert CodeEraser(bigram(), mode="cu", lam=0.0).retain_loss(IDS) is None
    assert CodeEraser(bigram(), mode="ssga").retain_loss(IDS) is None


def test_signs_ascent_on_secret_rows_descent_on_context_rows(bigram):
    """Bigram row W[a] only predicts the token after an ``a``: rows used only for secret targets get
    gradient *ascent* (loss goes up), rows used only for context targets get descent."""
    ids = torch.tensor([[0, 1, 2, 3, 4]])  # predictions: 0->1, 1->2, 2->3, 3->4
    sec = torch.tensor([[0, 1, 1, 0, 0]], dtype=torch.bool)  # targets 1, 2 secret (rows 0, 1); 3, 4 context (rows 2, 3)
    model = bigram(seed=3)
    ul = CodeEraser(model, mode="ssga", gamma=0.5)
    ul.forget_loss(ids, None, sec).backward()
    g = model.W.grad
    logp = torch.log_softmax(model.W.detach(), -1)
    # d(-mean nll_secret)/dW[0] = +(1/2) * d(log p(1|0))/dW[0] = (onehot(1) - p(.|0)) / 2
    p0 = logp[0].exp()
    assert torch.allclose(g[0], (torch.nn.functional.one_hot(torch.tensor(1), 7) - p0) / 2, atol=1e-6)
    p2 = logp[2].exp()
    assert torch.allclose(g[2], 0.5 * (p2 - torch.nn.functional.one_hot(torch.tensor(3), 7)) / 2, atol=1e-6)
    assert torch.equal(g[5], torch.zeros(7))  # unused row: no gradient
    # one SGD step: secret likelihood goes down, context likelihood goes up
    with torch.no_grad():
        model.W -= 0.5 * g
    new = torch.log_softmax(model.W.detach(), -1)
    assert new[0, 1] < logp[0, 1] and new[1, 2] < logp[1, 2]
    assert new[2, 3] > logp[2, 3] and new[3, 4] > logp[3, 4]


def test_kl_term_is_zero_at_the_reference_and_only_on_secret_positions(bigram):
    model = bigram(seed=4)
    ce = CodeEraser(model, mode="codeeraser", lam=1.0)  # ref = frozen copy: KL = 0 at start
    ss = CodeEraser(copy.deepcopy(model), mode="ssga")
    assert float(ce.forget_loss(IDS, None, SEC).detach()) == pytest.approx(float(ss.forget_loss(IDS, None, SEC).detach()), abs=1e-7)
    # changing a row that predicts only context tokens must not change the secret-masked KL
    ids = torch.tensor([[0, 1, 2, 3]])
    sec = torch.tensor([[0, 1, 0, 0]], dtype=torch.bool)  # only position 0 -> 1 is secret (row 0)
    m2 = bigram(seed=4)
    ul = CodeEraser(m2, ref_model=bigram(seed=4), mode="codeeraser", gamma=0.0, lam=1.0)
    with torch.no_grad():
        m2.W[2] += 5.0 * torch.arange(7.0)
    base = -float(torch.log_softmax(m2.W.detach(), -1)[0, 1])
    assert float(ul.forget_loss(ids, None, sec).detach()) == pytest.approx(-base, abs=1e-6)  # KL on row 0 still 0


def test_reference_model_is_frozen_and_keeps_original_weights(bigram):
    model = bigram(seed=5)
    w0 = model.W.detach().clone()
    ul = CodeEraser(model, mode="codeeraser", lr=0.1)
    assert not any(p.requires_grad for p in ul.ref_model.parameters()) and not ul.ref_model.training
    ul.unlearn([{"input_ids": IDS, "forget_mask": SEC}], [IDS], max_steps=3)
    assert not torch.equal(model.W.detach(), w0)
    assert torch.equal(ul.ref_model.W, w0)


def test_attention_mask_excludes_padding(hflike):
    model = hflike()
    ul = CodeEraser(model, mode="cu", lam=0.0)
    attn = torch.ones_like(IDS)
    attn[1, 4:] = 0
    got = float(ul.forget_loss(IDS, attn, None).detach())
    nll = torch.nn.functional.cross_entropy(model.inner.W[IDS[:, :-1]].reshape(-1, 7), IDS[:, 1:].reshape(-1),
                                            reduction="none").view(2, -1)
    valid = attn[:, 1:].bool()
    assert got == pytest.approx(-float(nll[valid].mean().detach()), rel=1e-6)


def test_errors(bigram):
    with pytest.raises(ValueError, match="forget set is empty"):
        CodeEraser(bigram()).unlearn([], [IDS])
    with pytest.raises(ValueError, match="forget_mask"):
        CodeEraser(bigram(), mode="codeeraser").forget_loss(IDS)
    with pytest.raises(ValueError, match="forget_mask"):
        CodeEraser(bigram(), mode="codeeraser").unlearn([{"input_ids": IDS, "secret_mask": SEC}], [IDS])
    with pytest.raises(ValueError, match="lam=0"):
        CodeEraser(bigram(), mode="ga")
    for bad in ({"lr": float("nan")}, {"lr": 0.0}, {"gamma": float("inf")}, {"lam": -1.0}, {"betas": (0.9, 1.0)}):
        with pytest.raises(ValueError):
            CodeEraser(bigram(), **bad)
    with pytest.raises(ValueError, match="retain"):
        CodeEraser(bigram(), mode="cu").unlearn([IDS], None)
    with pytest.raises(ValueError, match="mode"):
        CodeEraser(bigram(), mode="npo")
    with pytest.raises(ValueError, match="kl_sign_forget"):
        CodeEraser(bigram(), kl_sign_forget=0)
    with pytest.raises(TypeError, match="nn.Module"):
        CodeEraser(lambda x: x)

    class NoLogits(torch.nn.Module):
        def forward(self, ids):
            return {"hidden": ids.float()}

    with pytest.raises(TypeError, match="logits"):
        CodeEraser(NoLogits(), mode="cu", lam=0.0).forget_loss(IDS)


def test_memorization_accuracy_by_hand(bigram):
    model = bigram()
    with torch.no_grad():
        model.W.zero_()
        model.W[0, 3] = model.W[3, 5] = model.W[5, 4] = 10.0  # predicts 0->3, 3->5, 5->4
    ids = torch.tensor([[0, 3, 5, 2, 1]])
    mask = torch.tensor([[0, 1, 1, 1, 0]], dtype=torch.bool)  # targets 3 (hit), 5 (hit), 2 (miss: predicted 4)
    assert memorization_accuracy(model, ids, mask).tolist() == pytest.approx([2 / 3])
    assert torch.isnan(memorization_accuracy(model, ids, torch.zeros_like(mask))).all()


def test_extraction_likelihood_greedy_ngrams_by_hand(bigram):
    model = bigram()
    with torch.no_grad():
        model.W.zero_()
        for a, b in [(0, 1), (1, 2), (2, 3), (3, 6), (6, 5)]:
            model.W[a, b] = 10.0  # greedy chain 0 1 2 3 6 5
    ids = torch.tensor([[0, 1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    # n=2 starts t=1,2,3: "1 2" ok, "2 3" ok, "3 4" -> decodes "3 6": 2/3
    assert extraction_likelihood(model, ids, mask, n=2).tolist() == pytest.approx([2 / 3])
    # n=3 starts t=1,2: "1 2 3" ok, "2 3 4" fails: 1/2
    assert extraction_likelihood(model, ids, mask, n=3).tolist() == pytest.approx([0.5])
    assert torch.isnan(extraction_likelihood(model, ids, mask, n=5)).all()


def test_registered_components_and_defaults(bigram):
    for name, mode in [("codeeraser", "codeeraser"), ("lm-cu", "cu"), ("ssga", "ssga")]:
        ul = gk.create(name, bigram(), kind="unlearners")
        assert isinstance(ul, CodeEraser) and ul.mode == mode
    ce = gk.create("codeeraser", bigram(), kind="unlearners")
    assert (ce.gamma, ce.lam, ce.alpha, ce.kl_sign_forget, ce.betas) == (0.1, 0.1, 1.0, -1, (0.9, 0.98))
    assert ce.lr == 3e-6 and ce.kl_reduction == "batchmean"  # the official code's settings
    with pytest.raises(Exception, match="lm-ga"):  # one gradient ascent: lm-cu with lam=0
        gk.create("lm-ga", bigram(), kind="unlearners")
    assert gk.get("memorization-accuracy", kind="metrics") is memorization_accuracy


def test_codeeraser_forgets_the_secret_and_keeps_context_better_than_ga():
    """Claim direction on a tiny seeded run: a TinyGPT memorizes two sequences; CodeEraser and GA both
    erase the secret bytes, CodeEraser keeps the surrounding context far better."""
    from gradkit_support.models import TinyGPT

    torch.manual_seed(0)
    text = [b'import os\nKEY = "q7Zx91LmPa"\nprint(os.sep)\n', b'def g(a):\n    IP = "10.44.7.201"\n    return a\n']
    L = 40
    ids = torch.tensor([list(t[:L].ljust(L)) for t in text])
    sec = torch.zeros_like(ids, dtype=torch.bool)
    for i, t in enumerate(text):
        a = t.index(b'"') + 1
        sec[i, a : t.index(b'"', a)] = True
    model = TinyGPT(block_size=L, d_model=32, n_layer=1, n_head=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert memorization_accuracy(model, ids, sec).min() == 1.0
    out = {}
    for mode, kw in (("ga", {"mode": "cu", "lam": 0.0}), ("codeeraser", {"mode": "codeeraser"})):
        m = copy.deepcopy(model)
        CodeEraser(m, lr=3e-3, **kw).unlearn([{"input_ids": ids, "forget_mask": sec}], [ids], max_steps=30)
        out[mode] = (float(memorization_accuracy(m, ids, sec).mean()), float(memorization_accuracy(m, ids, ~sec).mean()))
    assert out["codeeraser"][0] < 0.5 and out["ga"][0] < 0.5
    assert out["codeeraser"][1] > out["ga"][1] + 0.2


class _Loader:
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


@pytest.mark.parametrize("name", ["codeeraser", "lm-cu", "ssga"])
class TestConformance(UnlearnerConformance):
    unlearn_kwargs = {"max_steps": 3}

    @pytest.fixture(autouse=True)
    def _name(self, name):
        self.component = name
        self.component_kwargs = {"lr": 1e-3, "max_steps": 4}  # max_steps: the default budget (kept small)
        self.uses_retain = name != "ssga"

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
        ids = torch.randint(0, 256, (4, 16), generator=g)
        sec = torch.zeros_like(ids, dtype=torch.bool)
        sec[:, 5:10] = True
        return _Loader([{"input_ids": ids[:2], "forget_mask": sec[:2]}, {"input_ids": ids[2:], "forget_mask": sec[2:]}])

    @pytest.fixture
    def retain_loader(self):
        g = torch.Generator().manual_seed(1)
        return _Loader([torch.randint(0, 256, (2, 16), generator=g) for _ in range(2)])


# ---------------------------------------------------------------------- issue 12: bad masks, explicit budget
@pytest.mark.parametrize("mode", ["codeeraser", "ssga", "cu"])
def test_all_false_or_position_zero_forget_mask_raises_and_changes_nothing(bigram, mode):
    """An all-False mask (or a secret only at position 0, which is never predicted) used to turn the
    forget step into plain descent on the context."""
    model = bigram(seed=2)
    w0 = model.W.detach().clone()
    only0 = torch.zeros_like(SEC)
    only0[:, 0] = True
    for bad in (torch.zeros_like(SEC), only0):
        forget = [{"input_ids": IDS, "forget_mask": SEC}, {"input_ids": IDS, "forget_mask": bad}]
        with pytest.raises(ValueError, match="forget_mask"):
            CodeEraser(model, mode=mode, lr=0.1).unlearn(forget, [IDS], max_steps=5)
        assert torch.equal(model.W.detach(), w0)


def test_epochs_are_not_cut_by_a_hidden_step_cap(bigram):
    """unlearn(epochs=50) used to stop silently at max_steps=100."""
    ul = CodeEraser(bigram(), mode="ssga", lr=1e-3)
    forget = [{"input_ids": IDS, "forget_mask": SEC}] * 3
    ul.unlearn(forget, epochs=50)
    assert ul.last_run["steps"] == 150 and ul.last_run["epochs"] == 50.0 and ul.last_run["stopped_by"] == "epochs"
    ul.unlearn(forget, epochs=50, max_steps=100)
    assert ul.last_run["steps"] == 100 and ul.last_run["stopped_by"] == "max_steps"
    ul.unlearn(forget)
    assert ul.last_run["steps"] == 100  # the default budget, reported


def test_stop_fn_is_reported(bigram):
    ul = CodeEraser(bigram(), mode="ssga", lr=1e-3)
    ul.unlearn([{"input_ids": IDS, "forget_mask": SEC}], max_steps=10, stop_fn=lambda m: True, eval_every=2)
    assert ul.last_run["steps"] == 2 and ul.last_run["stopped_by"] == "stop_fn"


def test_out_of_vocabulary_ids_raise(bigram):
    bad = IDS.clone()
    bad[0, 3] = 7  # vocabulary is 7
    with pytest.raises(ValueError, match="vocabulary"):
        CodeEraser(bigram(), mode="cu", lam=0.0).unlearn([bad])
