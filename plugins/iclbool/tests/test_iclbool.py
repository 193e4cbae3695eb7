import itertools
import math

import numpy as np
import pytest
import torch

import gradkit_core as gk
from gradkit_iclbool.learners import LEARNERS, accuracy_per_position, learner_scores
from gradkit_iclbool.models import PromptModel
from gradkit_iclbool.tasks import TASKS, make_task
from gradkit_iclbool.train import icl_accuracy_curve, learner_curve, train_prompt_model


def T(rows):
    return torch.tensor(rows, dtype=torch.float32)


def with_w(name, w, n=4, **kw):
    t = make_task(name, n, 1, seed=0, **kw)
    w = np.asarray(w, dtype=np.float32)
    t.w = w[None] if w.ndim == 1 else w[:, None, :]
    t.k = np.abs(t.w).sum(-1) - 1
    return t


def all_inputs(n):
    return T(list(itertools.product([-1, 1], repeat=n)))


# ----------------------------------------------------------------- labels, by hand
@pytest.mark.parametrize("name,w,xs,ys", [
    ("conjunction", [1, -1, 0, 0], [[1, -1, 1, 1], [1, 1, 1, 1], [-1, -1, -1, -1], [1, -1, -1, -1]], [1, -1, -1, 1]),
    ("disjunction", [1, -1, 0, 0], [[-1, 1, 1, 1], [1, 1, 1, 1], [-1, -1, -1, -1], [-1, 1, -1, -1]], [-1, 1, 1, -1]),
    ("parity", [1, 0, 1, 0], [[1, -1, 1, -1], [1, -1, -1, -1], [-1, 1, -1, 1], [1, 1, 1, 1]], [-1, 1, -1, -1]),
    ("majority", [1, 1, 1, 0], [[1, 1, -1, -1], [1, -1, -1, 1], [-1, -1, -1, 1], [1, 1, 1, -1]], [1, -1, -1, 1]),
    ("int_halfspace", [3, -2, 0, 1], [[1, 1, 1, 1], [-1, 1, 1, 1], [1, 1, -1, -1], [1, -1, -1, -1]], [1, -1, -1, 1]),
    ("dnf", [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, -1]],
     [[-1, 1, -1, 1], [-1, 1, 1, 1], [1, -1, -1, 1], [-1, -1, -1, -1]], [-1, 1, 1, 1]),
    ("cnf", [[1, 1, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]],
     [[1, -1, -1, 1], [-1, -1, -1, 1], [1, 1, 1, 1], [1, 1, -1, -1]], [1, -1, -1, -1]),
])
def test_labels_by_hand(name, w, xs, ys):
    t = with_w(name, w)
    assert t.evaluate(T(xs)[None]).tolist() == [ys]


def _logical(name, w, x):
    """Reference labels from the logical definitions (not the arithmetic in tasks.py)."""
    lits = [(i, wi > 0) for i, wi in enumerate(w) if wi != 0]
    true = lambda i, pos: (x[i] == 1) == pos
    if name in ("conjunction", "mono_conjunction", "teach_conjunction", "teach_biconjunction"):
        return all(true(i, p) for i, p in lits)
    if name in ("disjunction", "sparse_disjunction"):
        return any(true(i, p) for i, p in lits)
    if name in ("parity", "sparse_parity"):
        return sum(1 for i, wi in enumerate(w) if wi and x[i] == 1) % 2 == 1
    if name in ("majority", "int_halfspace"):
        return sum(wi * xi for wi, xi in zip(w, x)) > 0.5
    raise KeyError(name)


@pytest.mark.parametrize("name", ["conjunction", "disjunction", "sparse_disjunction", "parity", "sparse_parity",
                                  "majority", "int_halfspace", "mono_conjunction", "teach_conjunction",
                                  "teach_biconjunction"])
def test_labels_match_logical_definition_on_every_input(name):
    n = 5
    t = make_task(name, n, 12, seed=3)
    xs = all_inputs(n)[None].repeat(12, 1, 1)
    ys = t.evaluate(xs)
    assert set(ys.unique().tolist()) <= {-1.0, 1.0}
    for b in range(12):
        ref = [1.0 if _logical(name, t.w[b].tolist(), x.tolist()) else -1.0 for x in xs[b]]
        assert ys[b].tolist() == ref


def test_dnf_cnf_are_or_and_of_terms():
    n = 5
    for name, comb, term in (("dnf", any, "conjunction"), ("cnf", all, "disjunction")):
        t = make_task(name, n, 6, seed=1)
        xs = all_inputs(n)[None].repeat(6, 1, 1)
        ys = t.evaluate(xs)
        for b in range(6):
            ref = [1.0 if comb(_logical(term, t.w[c, b].tolist(), x.tolist()) for c in range(3)) else -1.0
                   for x in xs[b]]
            assert ys[b].tolist() == ref


def test_forced_positives_and_negatives():
    n, B, m = 10, 400, 40
    conj = make_task("conjunction", n, B, seed=0)
    pos = (conj.sample(m)[1] == 1).float().mean().item()
    none = (make_task("conjunction", n, B, seed=0, p_forced=0.0).sample(m)[1] == 1).float().mean().item()
    assert pos > 0.3 and none < pos - 0.2  # without forcing, labels are mostly -1
    assert (make_task("conjunction", n, 8, seed=0, p_forced=1.0).sample(m)[1] == 1).all()
    assert (make_task("disjunction", n, 8, seed=0, p_forced=1.0).sample(m)[1] == -1).all()
    mono = make_task("mono_conjunction", n, 50, seed=0)
    assert (mono.w >= 0).all() and mono.w.sum() > 0  # monotone, not empty
    sp = make_task("sparse_disjunction", n, 50, seed=0)
    assert (sp.w.sum(1) == 4).all()
    assert (make_task("sparse_parity", n, 50, seed=0).w.sum(1) == 2).all()


def test_seeding():
    a = make_task("dnf", 8, 4, seed=7).sample(10)
    b = make_task("dnf", 8, 4, seed=7).sample(10)
    c = make_task("dnf", 8, 4, seed=8).sample(10)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


# ----------------------------------------------------------------- teaching sequences
def _consistent(w, xs, ys):
    return all((1.0 if _logical("conjunction", w, x) else -1.0) == y for x, y in zip(xs, ys))


@pytest.mark.parametrize("name,extra,signs", [("teach_conjunction", 1, (0, 1)), ("teach_biconjunction", 2, (0, 1, -1))])
def test_teaching_sequence_length_and_unique_identification(name, extra, signs):
    n, B = 6, 30
    t = make_task(name, n, B, seed=2)
    xs, ys = t.sample(n + 2)
    hyps = list(itertools.product(signs, repeat=n))
    for b in range(B):
        k = int(np.abs(t.w[b]).sum())
        L = k + extra
        assert t.teach_len[b] == L
        assert np.array_equal(xs[b, :L].numpy(), t.teaching_sequence(b))
        pre_x, pre_y = xs[b, :L].tolist(), ys[b, :L].tolist()
        consistent = [h for h in hyps if _consistent(list(h), pre_x, pre_y)]
        assert consistent == [tuple(int(v) for v in t.w[b])], (b, consistent)
        # and no shorter prefix (dropping the last teaching example) identifies it when k > 0
        if k > 0:
            assert len([h for h in hyps if _consistent(list(h), pre_x[:-1], pre_y[:-1])]) > 1


def test_teaching_needs_room():
    with pytest.raises(ValueError, match="teaching sequence"):
        make_task("teach_conjunction", 8, 64, seed=0).sample_xs(3)


# ----------------------------------------------------------------- learners
def test_elimination_consistent_with_every_seen_example_and_never_false_positive():
    n, B, m = 8, 64, 30
    xs, ys = make_task("conjunction", n, B, seed=5).sample(m)
    pred = torch.where(learner_scores("elimination", xs, ys) > 0, 1.0, -1.0)
    assert not ((pred == 1) & (ys == -1)).any()  # hypothesis is more specific than the target
    for i in (3, 10, 29):
        for j in range(i):
            # query an earlier example after the prefix 0..i-1: must reproduce its label
            q = torch.cat([xs[:, :i], xs[:, j:j + 1]], 1)
            qy = torch.cat([ys[:, :i], ys[:, j:j + 1]], 1)
            s = learner_scores("elimination", q, qy)[:, -1]
            assert torch.equal(torch.where(s > 0, 1.0, -1.0), ys[:, j])


def test_elimination_hand_step():
    xs = T([[[1, 1, -1], [1, -1, -1], [1, 1, 1], [-1, 1, -1], [1, -1, -1]]])
    ys = T([[1, 1, -1, -1, 1]])
    # nothing kept-out before ex0 -> -1; after ex0 (+): x0, x1, !x2 -> ex1 (x1 off) -1; after ex1 (+): x0, !x2
    # -> ex2 (x2 on) -1, ex3 (x0 off) -1, ex4 satisfies x0 and !x2 -> +1
    assert learner_scores("elimination", xs, ys).tolist() == [[-1, -1, -1, -1, 1]]
    # monotone: only x0, x1 (after ex0), then x0 -> ex2 (+1, a false positive for this target is allowed)
    assert learner_scores("elimination_monotone", xs, ys).tolist() == [[-1, -1, 1, -1, 1]]


def _determined(xs_prefix, ys_prefix, x, n):
    labels = set()
    for S in itertools.product([0, 1], repeat=n):
        f = lambda v: 1.0 if sum(1 for i in range(n) if S[i] and v[i] == 1) % 2 else -1.0
        if all(f(v) == y for v, y in zip(xs_prefix, ys_prefix)):
            labels.add(f(x))
    return labels


def test_gf2_exact_whenever_the_label_is_determined():
    n, B, m = 6, 6, 14
    xs, ys = make_task("parity", n, B, seed=4).sample(m)
    pred = torch.where(learner_scores("gf2", xs, ys) > 0, 1.0, -1.0)
    n_det = 0
    for b in range(B):
        for i in range(m):
            lab = _determined(xs[b, :i].tolist(), ys[b, :i].tolist(), xs[b, i].tolist(), n)
            assert len(lab) >= 1
            if len(lab) == 1:
                n_det += 1
                assert pred[b, i].item() == lab.pop()
    assert n_det > B * 3


def test_gf2_exact_after_spanning_prefix():
    n = 5
    rows = [[1 if j == i else -1 for j in range(n)] for i in range(n)]  # unit vectors span GF(2)^n
    t = make_task("parity", n, 3, seed=1)
    rest = t.sample_xs(20)
    xs = torch.cat([T(rows)[None].repeat(3, 1, 1), rest], 1)
    ys = t.evaluate(xs)
    acc = accuracy_per_position(learner_scores("gf2", xs, ys), ys)
    assert torch.all(acc[n:] == 1.0)


def test_baselines_by_hand():
    xs = T([[[1, 1], [1, -1], [1, 1], [-1, -1]]])
    ys = T([[1, -1, 1, -1]])
    # averaging: w_<1 = (1,1): x1 . w = 0; w_<2 = (0,2): x2 . w = 2; w_<3 = (1,3): x3 . w = -4
    s = learner_scores("averaging", xs, ys)
    assert s.tolist() == [[0, 0, 2, -4]]
    # 1-NN: x2 equals x0 -> +1; x3 is nearest to x1 (distance 1) -> -1
    assert learner_scores("nn", xs, ys)[0, 2:].tolist() == [1, -1]
    assert learner_scores("null", xs, ys).tolist() == [[-1, -1, -1, -1]]
    ls = learner_scores("least_squares", xs, ys)
    assert ls[0, 2].item() == pytest.approx(1.0, abs=1e-5)  # w = (0, 1) fits both; x2 . w = 1


def test_learners_never_see_the_current_label():
    xs, ys = make_task("conjunction", 6, 16, seed=0).sample(12)
    for ln in LEARNERS:
        a = learner_scores(ln, xs, ys)
        ys2 = ys.clone()
        ys2[:, 5] = -ys2[:, 5]
        b = learner_scores(ln, xs, ys2)
        assert torch.equal(a[:, :6], b[:, :6]), ln


# ----------------------------------------------------------------- models
@pytest.mark.parametrize("backbone", ["transformer", "lstm", "linrec"])
def test_model_is_causal_and_never_sees_the_label_it_predicts(backbone):
    torch.manual_seed(0)
    model = PromptModel(6, backbone, 16, 2, 2, 16).eval()
    xs, ys = make_task("parity", 6, 4, seed=0).sample(10)
    base = model(xs, ys)
    assert base.shape == (4, 10)
    for i in (0, 4, 9):
        ys2 = ys.clone()
        ys2[:, i] = -ys2[:, i]
        out = model(xs, ys2)
        assert torch.allclose(out[:, : i + 1], base[:, : i + 1], atol=1e-6)  # y_i never reaches logit <= i
        if i < 9:
            assert not torch.allclose(out[:, i + 1:], base[:, i + 1:])  # but later positions use it
        xs2 = xs.clone()
        xs2[:, i] = -xs2[:, i]
        assert not torch.allclose(model(xs2, ys)[:, i], base[:, i])  # logit i depends on x_i


def test_registered_architectures_build():
    xs, ys = make_task("conjunction", 10, 2, seed=0).sample(8)
    for name in ("icl-prompt-model", "icl-transformer", "icl-lstm", "icl-linrec"):
        m = gk.create(name, kind="architectures", n_dims=10)
        assert isinstance(m, torch.nn.Module) and m(xs, ys).shape == (2, 8)


def test_trained_transformer_learns_conjunction_in_context_but_not_parity():
    """Reduced form of the paper's two directions (CI-sized: n = 5, m = 12, 150 steps, 2 seeds)."""
    n, m = 5, 12
    for seed in (0, 1):
        accs = {}
        for task in ("conjunction", "parity"):
            torch.manual_seed(seed)
            model = PromptModel(n, "transformer", 16, 1, 2, m)
            train_prompt_model(model, task, n_dims=n, n_points=m, steps=150, batch_size=64, lr=3e-3, seed=seed,
                               warmup=20)
            c = icl_accuracy_curve(model, task, n_dims=n, n_points=m, n_prompts=1024, seed=seed)
            accs[task] = float(c[m // 2:].mean())
        null = float(learner_curve("null", "conjunction", n_dims=n, n_points=m, n_prompts=1024, seed=seed)[m // 2:].mean())
        assert accs["conjunction"] > null + 0.1, (accs, null)
        assert abs(accs["parity"] - 0.5) < 0.06, accs


# ----------------------------------------------------------------- bad input
def test_bad_input_errors():
    with pytest.raises(ValueError, match="unknown task"):
        make_task("xor-of-everything", 5, 2)
    with pytest.raises(ValueError, match="n_dims"):
        make_task("parity", 0, 2)
    with pytest.raises(TypeError, match="n_dims"):
        make_task("parity", 2.5, 2)
    with pytest.raises(ValueError, match="p_forced"):
        make_task("conjunction", 5, 2, p_forced=float("nan"))
    with pytest.raises(ValueError, match="k = 7"):
        make_task("sparse_parity", 5, 2, k=7)
    t = make_task("conjunction", 4, 2, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        t.evaluate(torch.full((2, 3, 4), float("nan")))
    with pytest.raises(ValueError, match="n_dims"):
        t.evaluate(torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match="exactly -1 or \\+1"):
        t.evaluate(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="prompts"):
        t.evaluate(torch.ones(3, 3, 4))
    xs, ys = t.sample(5)
    with pytest.raises(ValueError, match="unknown learner"):
        learner_scores("oracle", xs, ys)
    with pytest.raises(ValueError, match="ys must have shape"):
        learner_scores("nn", xs, ys[:, :3])
    bad = ys.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        learner_scores("gf2", xs, bad)
    with pytest.raises(ValueError, match="unknown backbone"):
        PromptModel(4, "mamba")
    with pytest.raises(ValueError, match="divisible"):
        PromptModel(4, "transformer", n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer"):
        PromptModel(4, "lstm", n_layer=0)
    model = PromptModel(4, "transformer", 16, 1, 2, n_positions=4)
    with pytest.raises(ValueError, match="shape"):
        model(torch.ones(2, 3, 5), torch.ones(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 3, 4), float("nan")), torch.ones(2, 3))
    with pytest.raises(ValueError, match="n_positions"):
        model(torch.ones(2, 5, 4), torch.ones(2, 5))
    with pytest.raises(ValueError, match="lr"):
        train_prompt_model(model, "parity", n_dims=4, n_points=3, steps=1, lr=float("inf"))
    with pytest.raises(ValueError, match="scores"):
        accuracy_per_position(torch.full((2, 3), float("nan")), torch.ones(2, 3))


def test_bench_suite_claims():
    from gradkit_iclbool.bench import run

    res = run(quick=True, seed=0)
    assert res.claims and all(c.passed for c in res.claims), res.report()
    assert {r["task"] for r in res.rows} >= set(TASKS)


@pytest.mark.slow
def test_quick_reproduction_runs():
    from gradkit_iclbool.reproduce import run

    res = run(quick=True, seed=0, progress=False)
    names = [c.text for c in res.claims]
    assert any("parity" in t and "chance" in t for t in names)
    par = [c for c in res.claims if "stays at chance" in c.text]
    assert par and all(c.passed for c in par), res.report()
