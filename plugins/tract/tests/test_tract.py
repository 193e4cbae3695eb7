import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradkit_core as gk
from gradkit_core.testing.transforms import TransformConformance
from gradkit_tract.tract import TrAct, TrActConv2d, TrActLinear, apply_tract, tract_weight_grad

torch.set_num_threads(1)


def _ref_direct(x, gz, lam):
    """The paper's closed form written out in float64: Gᵀ X (XᵀX/b + λI)⁻¹."""
    x, gz = x.double(), gz.double()
    b, n = x.shape
    return gz.T @ x @ torch.linalg.inv(x.T @ x / b + lam * torch.eye(n, dtype=torch.float64))


@pytest.mark.parametrize("b,n", [(40, 9), (6, 27), (27, 27)])
@pytest.mark.parametrize("inv", ["inverse", "cholesky", "solve"])
def test_direct_and_woodbury_branches_agree(b, n, inv):
    g = torch.Generator().manual_seed(b * n)
    x = torch.randn(b, n, generator=g, dtype=torch.float64)
    gz = torch.randn(b, 5, generator=g, dtype=torch.float64)
    for lam in (0.01, 0.1, 3.0):
        d = tract_weight_grad(x, gz, lam, branch="direct", inv=inv)
        w = tract_weight_grad(x, gz, lam, branch="woodbury", inv=inv)
        assert torch.allclose(d, w, rtol=1e-8, atol=1e-10)
        assert torch.allclose(d, _ref_direct(x, gz, lam), rtol=1e-8, atol=1e-10)


def test_auto_branch_picks_woodbury_when_batch_is_smaller():
    x, gz = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    # b < n: XᵀX/b is rank-deficient, so only λ keeps the direct system invertible; both forms still agree
    a = tract_weight_grad(x, gz, 0.1)
    assert torch.allclose(a, tract_weight_grad(x, gz, 0.1, branch="woodbury"))
    assert torch.allclose(a, _ref_direct(x, gz, 0.1), atol=1e-10)


def test_large_lambda_approaches_plain_gradient_up_to_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 9, generator=g, dtype=torch.float64)
    gz = torch.randn(50, 4, generator=g, dtype=torch.float64)
    plain = gz.T @ x
    errs = []
    for lam in (1.0, 1e2, 1e4, 1e6):
        t = tract_weight_grad(x, gz, lam)
        errs.append(float((lam * t - plain).norm() / plain.norm()))
    assert errs == sorted(errs, reverse=True)  # monotone approach
    assert errs[-1] < 1e-5
    # the cosine to the plain gradient goes to 1 as well (direction, not just scale)
    t = tract_weight_grad(x, gz, 1e4).flatten()
    assert F.cosine_similarity(t, plain.flatten(), dim=0) > 1 - 1e-6


def test_tract_solves_the_activation_least_squares_problem():
    """∇̃_W minimises ‖X ΔWᵀ − b·∂L/∂Z‖²/b + λ‖ΔW‖² (the paper's motivation: the weight change whose activation
    change best matches the per-example activation gradient b·∂L/∂Z of a mean loss): its gradient vanishes."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 6, generator=g, dtype=torch.float64)
    gz = torch.randn(30, 3, generator=g, dtype=torch.float64)
    lam = 0.1
    D = tract_weight_grad(x, gz, lam).requires_grad_(True)
    obj = ((x @ D.T - 30 * gz) ** 2).sum() / 30 + lam * (D ** 2).sum()
    (grad,) = torch.autograd.grad(obj, D)
    assert grad.abs().max() < 1e-10


def _unfold_reference(x, weight, gz, stride, padding, lam):
    cols = F.unfold(x, weight.shape[2:], padding=padding, stride=stride)
    X = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    G = gz.permute(0, 2, 3, 1).reshape(-1, gz.shape[1])
    return _ref_direct(X, G, lam).reshape(weight.shape)


@pytest.mark.parametrize("stride,padding,batch", [(1, 0, 4), (2, 1, 3), ((1, 2), (2, 0), 2), (1, 1, 1)])
def test_conv_matches_unfold_reference_and_keeps_input_and_bias_grads(stride, padding, batch):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 5, 3, stride=stride, padding=padding).double()
    plain = copy.deepcopy(conv)
    tr = TrAct(conv, lam=0.1)
    x1 = torch.randn(batch, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y = tr(x1)
    target = torch.randn_like(y)
    ((y - target) ** 2).mean().backward()
    y2 = plain(x2)
    assert torch.allclose(y, y2)  # forward is the plain layer
    gz = 2 * (y2.detach() - target) / y2.numel()
    ((y2 - target) ** 2).mean().backward()
    expected = _unfold_reference(x1.detach(), conv.weight, gz, tr.stride, tr.padding, 0.1)
    assert torch.allclose(conv.weight.grad, expected, atol=1e-10)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-12)
    assert torch.allclose(conv.bias.grad, plain.bias.grad, atol=1e-12)


def test_linear_wrapper_weight_input_and_bias_grads():
    torch.manual_seed(0)
    lin = nn.Linear(8, 5).double()
    plain = copy.deepcopy(lin)
    tr = TrAct(lin)
    x = torch.randn(4, 6, 8, dtype=torch.float64)  # leading dims become rows (b = 24)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    tgt = torch.randn(4, 6, 5, dtype=torch.float64)
    ((tr(xa) - tgt) ** 2).mean().backward()
    ((plain(xb) - tgt) ** 2).mean().backward()
    gz = 2 * (plain(x) - tgt).detach().reshape(-1, 5) / tgt.numel()
    assert torch.allclose(lin.weight.grad, _ref_direct(x.reshape(-1, 8), gz, 0.1), atol=1e-10)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-12)
    assert torch.allclose(lin.bias.grad, plain.bias.grad, atol=1e-12)


def test_wrapper_shares_parameters_and_state_dict_keys():
    lin = nn.Linear(3, 2)
    tr = TrAct(lin)
    assert tr.weight is lin.weight and tr.bias is lin.bias
    assert isinstance(tr, TrActLinear)
    assert set(tr.state_dict()) == set(lin.state_dict())
    conv = nn.Conv2d(1, 4, 3, bias=False)
    tc = TrAct(conv, lam=0.5)
    assert isinstance(tc, TrActConv2d) and tc.bias is None and tc.lam == 0.5


def test_apply_tract_replaces_first_layer_and_trains_with_any_optimizer():
    from gradkit_support.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(width=4)
    plain = copy.deepcopy(model)
    keys = set(model.state_dict())
    first = model.features[0]
    apply_tract(model, lam=0.1)
    assert isinstance(model.features[0], TrActConv2d) and model.features[0].weight is first.weight
    assert set(model.state_dict()) == keys
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    F.cross_entropy(model(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    # only the first layer's weight gradient changes; it equals TrAct's closed form of the plain one
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        if name == "features.0.weight":
            assert not torch.allclose(p.grad, q.grad)
        else:
            assert torch.allclose(p.grad, q.grad, atol=1e-7), name
    for opt_cls, kw in ((torch.optim.SGD, dict(lr=0.1, momentum=0.9)), (torch.optim.Adam, dict(lr=1e-3))):
        opt = opt_cls(model.parameters(), **kw)
        w_before = first.weight.detach().clone()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        assert not torch.equal(w_before, first.weight.detach())
    named = apply_tract(SmallCNN(width=4), "features.0", lam=1.0)
    assert named.features[0].lam == 1.0


def test_gradkit_create_and_registration():
    lin = nn.Linear(4, 3)
    tr = gk.create("tract", lin, kind="transforms")
    assert isinstance(tr, TrActLinear) and tr.lam == 0.1
    spec = gk.info("tract", kind="transforms")
    assert "gradient-transform" in spec.tags and spec.paper.arxiv == "2410.23970"


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="dilation=1 and groups=1"):
        TrAct(nn.Conv2d(2, 4, 3, dilation=2))
    with pytest.raises(ValueError, match="dilation=1 and groups=1"):
        TrAct(nn.Conv2d(2, 4, 3, groups=2))
    with pytest.raises(ValueError, match="zero padding"):
        TrAct(nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(TypeError, match="nn.Linear or nn.Conv2d"):
        TrAct(nn.Conv1d(2, 4, 3))
    with pytest.raises(ValueError, match="lam"):
        TrAct(nn.Linear(2, 2), lam=0.0)
    with pytest.raises(ValueError, match="branch must be one of"):
        TrAct(nn.Linear(2, 2), branch="qr")
    with pytest.raises(ValueError, match=r"expects inputs \(\.\.\., 2\)"):
        TrAct(nn.Linear(2, 2))(torch.randn(3, 5))
    with pytest.raises(ValueError, match="no submodule named"):
        apply_tract(nn.Sequential(nn.Linear(2, 2)), "fc1")


# ---------------------------------------------------------------------- the authors' package as golden values
def test_matches_torch_tract_golden_values():
    tt = pytest.importorskip("torch_tract")
    # the official __main__ setups (seed 0): 30×8 Linear, 30×2×6×4 Conv2d; plus a b < n Woodbury case
    for make, xs, ys in (
        (lambda: nn.Linear(8, 5), (30, 8), (30, 5)),
        (lambda: nn.Linear(8, 5), (5, 8), (5, 5)),
        (lambda: nn.Conv2d(2, 5, 3, 1, 0), (30, 2, 6, 4), (30, 5, 4, 2)),
        (lambda: nn.Conv2d(2, 5, 3, 2, 1), (1, 2, 4, 4), (1, 5, 2, 2)),  # B·L = 4 < n = 18
    ):
        torch.manual_seed(0)
        x, y = torch.randn(*xs), torch.randn(*ys)
        layer = make()
        ref_layer = copy.deepcopy(layer)
        ours = TrAct(layer, lam=0.1)
        theirs = tt.TrAct(ref_layer, l=0.1)
        ((y - ours(x)) ** 2).mean().backward()
        ((y - theirs(x)) ** 2).mean().backward()
        assert torch.allclose(layer.weight.grad, ref_layer.weight.grad, rtol=1e-4, atol=1e-6)
        assert torch.allclose(layer.bias.grad, ref_layer.bias.grad.reshape(-1), atol=1e-6)


# ---------------------------------------------------------------------- autocast, idempotence, the transforms contract
_AUTOCAST_CASES = [
    (lambda: nn.Linear(8, 5), (30, 8)),            # direct branch (b >= n)
    (lambda: nn.Linear(8, 5), (4, 8)),             # Woodbury branch (b < n)
    (lambda: nn.Conv2d(2, 5, 3, padding=1), (3, 2, 6, 6)),
    (lambda: nn.Conv2d(2, 5, 3, 2, 1), (1, 2, 4, 4)),  # B·L = 4 < n = 18: Woodbury
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", range(len(_AUTOCAST_CASES)))
def test_works_under_autocast_and_solves_in_float32(dtype, case):
    """Under torch.autocast the forward is the autocast layer's (half-precision output) and the backward
    solves the small system in float32 (it used to fail with dtype errors); gradients come back in the
    parameters' dtype and match the float32 run to the half-precision rounding of the forward."""
    make, shape = _AUTOCAST_CASES[case]
    torch.manual_seed(0)
    layer = make()
    ref = copy.deepcopy(layer)
    x = torch.randn(*shape)
    with torch.autocast("cpu", dtype=dtype):
        y = TrAct(layer, lam=0.1)(x)
        loss = (y.float() ** 2).mean()
    loss.backward()
    (TrAct(ref, lam=0.1)(x) ** 2).mean().backward()
    assert y.dtype == dtype
    assert layer.weight.grad.dtype == torch.float32 and layer.bias.grad.dtype == torch.float32
    rel = float((layer.weight.grad - ref.weight.grad).norm() / ref.weight.grad.norm())
    assert rel < (2e-2 if dtype == torch.bfloat16 else 3e-3), rel
    assert torch.allclose(layer.bias.grad, ref.bias.grad, rtol=2e-2, atol=1e-3)


def test_wrapping_is_idempotent():
    from gradkit_support.models import SmallCNN

    lin = nn.Linear(3, 2)
    once = TrAct(lin, lam=0.2)
    assert TrAct(once, lam=0.2) is once
    with pytest.raises(ValueError, match="already a TrAct layer"):
        TrAct(once, lam=0.5)
    model = SmallCNN(width=4)
    second_linear = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][1]
    apply_tract(model, lam=0.1)
    apply_tract(model, lam=0.1)  # used to wrap the next layer as well
    wrapped = [m for m in model.modules() if isinstance(m, (TrActLinear, TrActConv2d))]
    assert len(wrapped) == 1 and wrapped[0] is model.features[0]
    assert any(m is second_linear for m in model.modules()), "the second layer must stay a plain layer"
    with pytest.raises(ValueError, match="already a TrAct layer"):
        apply_tract(model, lam=1.0)


def test_nonfinite_input_and_gradient_are_clear_errors():
    conv = nn.Conv2d(1, 2, 3)
    tr = TrAct(conv)
    x = torch.randn(2, 1, 5, 5)
    x[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        tr(x)
    y = tr(torch.randn(2, 1, 5, 5))
    with pytest.raises(ValueError, match="gradient arriving"):
        y.backward(torch.full_like(y, float("inf")))
    assert conv.weight.grad is None


class TestTrActLinearConformance(TransformConformance):
    component = "tract"
    form = "wrapper"
    finite_hyperparameters = ("lam",)


class TestTrActConv2dConformance(TransformConformance):
    component = "tract"
    form = "wrapper"
    component_kwargs = {"lam": 0.5}
    finite_hyperparameters = ("lam",)

    def make_layer(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Conv2d(2, 3, 3, padding=1)

    def wrapper_input(self, seed: int = 2) -> torch.Tensor:
        return torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(seed))
