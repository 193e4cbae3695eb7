"""Issue 12: several target layers, ``reshape_transform`` (ViT tokens), layers off the logits' path,
non-finite input -- for all six CAM methods."""

import pytest
import torch
import torch.nn as nn

import gradkit_core as gk
from gradkit_cfcam.cams import AblationCAM, GradCAM, ScoreCAM, TokenReshape, aggregate_layer_maps
from gradkit_cfcam.data import CamCNN

METHODS = {
    "grad-cam": {},
    "grad-cam++": {},
    "smooth-grad-cam++": {"n_samples": 2},
    "score-cam": {},
    "ablation-cam": {},
    "cf-cam": {},
}


def _cnn():
    torch.manual_seed(0)
    return CamCNN(num_classes=3, widths=(4, 8, 8), pools=2).eval()


def _x(n=2, size=16, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- several target layers
@pytest.mark.parametrize("name", list(METHODS))
def test_list_of_layers_is_the_renormalised_mean_of_single_layer_maps(name):
    """pytorch-grad-cam's aggregation: each layer's map in [0, 1] at input size, mean, divided by its max."""
    model, x, t = _cnn(), _x(), [0, 2]
    layers = [model.cam_layer(-2), model.cam_layer(-1)]
    singles = []
    for layer in layers:
        with gk.create(name, model, target_layer=layer, **METHODS[name]) as cam:
            singles.append(cam.explain(x, targets=t))
    with gk.create(name, model, target_layer=layers, **METHODS[name]) as cam:
        res = cam.explain(x, targets=t)
    mean = torch.stack([s.cam for s in singles], 1).mean(1)
    expected = mean / mean.flatten(1).amax(1).view(-1, 1, 1)
    torch.testing.assert_close(res.cam, expected, atol=1e-5, rtol=0)
    assert res.layer_maps.shape == (2, 2, 16, 16)
    for i, s in enumerate(singles):  # nested layers each get their own full gradient / weights
        torch.testing.assert_close(res.weights[i], s.weights, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(res.layer_maps[:, i], s.cam, atol=1e-6, rtol=0)
    assert not torch.allclose(singles[0].cam, singles[1].cam, atol=1e-3)  # the mean is not trivially one map


def test_aggregate_by_hand():
    a = torch.tensor([[[0.0, 1.0], [0.5, 0.0]]])
    b = torch.tensor([[[0.0, 0.5], [1.0, 0.0]]])
    # mean = [[0, .75], [.75, 0]] -> divided by .75
    torch.testing.assert_close(aggregate_layer_maps([a, b]), torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))
    assert aggregate_layer_maps([a]) is a


def test_layer_list_errors():
    model = _cnn()
    with pytest.raises(ValueError, match="empty"):
        GradCAM(model, [])
    with pytest.raises(ValueError, match="same module"):
        GradCAM(model, [model.cam_layer(), model.cam_layer()])
    with pytest.raises(TypeError, match="not both"):
        GradCAM(model, model.cam_layer(), target_layers=[model.cam_layer()])
    with pytest.raises(TypeError, match="target_layer"):
        GradCAM(model)
    with GradCAM(model, target_layers=[model.cam_layer()]) as cam:  # pytorch-grad-cam's keyword
        assert cam(_x()).shape == (2, 16, 16)


# ---------------------------------------------------------------------- ViT tokens
class TinyViT(nn.Module):
    """4x4 patches of a 16x16 image -> 16 tokens + CLS, one pre-norm transformer block, head on CLS."""

    def __init__(self, dim=8, classes=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.patch = nn.Conv2d(1, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.1 * torch.randn(1, 17, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 16), nn.GELU(), nn.Linear(16, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(x), -1, -1), t], 1) + self.pos
        h = self.norm1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return self.head(t[:, 0])


def test_token_output_without_reshape_transform_is_a_clear_error():
    vit = TinyViT().eval()
    with GradCAM(vit, vit.norm1) as cam:
        with pytest.raises(ValueError, match="reshape_transform"):
            cam(_x())


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_explains_a_vit_with_token_reshape(name):
    vit, x = TinyViT().eval(), _x(3)
    with gk.create(name, vit, target_layer=vit.norm1, reshape_transform=TokenReshape(), **METHODS[name]) as cam:
        res = cam.explain(x, targets=[0, 1, 2])
    assert res.activations.shape == (3, 8, 4, 4)
    assert res.cam.shape == (3, 16, 16) and torch.isfinite(res.cam).all()
    assert float(res.cam.min()) >= 0 and float(res.cam.max()) <= 1
    assert float(res.cam.max()) > 0, "every map is zero"  # single maps may be 0 (LayerNorm outputs can be < 0)
    assert all(not m._forward_hooks for m in vit.modules())


def _tokens_and_grad(vit, x, c):
    store = {}
    h = vit.norm1.register_forward_hook(lambda m, i, o: store.__setitem__("t", o))
    out = vit(x)
    h.remove()
    (g,) = torch.autograd.grad(out[:, c].sum(), store["t"])
    return store["t"].detach(), g, out.detach()


def test_vit_gradcam_weights_by_hand():
    """pytorch-grad-cam semantics: reshape_transform applied to the tokens and to their gradient."""
    vit, x = TinyViT().eval(), _x(2)
    tok, g, _ = _tokens_and_grad(vit, x, 1)
    grid = lambda t: t[:, 1:, :].reshape(2, 4, 4, 8).permute(0, 3, 1, 2)  # noqa: E731
    with GradCAM(vit, vit.norm1, reshape_transform=TokenReshape()) as cam:
        res = cam.explain(x, targets=1)
    torch.testing.assert_close(res.activations, grid(tok))
    torch.testing.assert_close(res.weights, grid(g).mean(dim=(2, 3)), rtol=1e-5, atol=1e-8)


def test_vit_ablation_zeroes_one_feature_of_the_patch_tokens_only():
    vit, x = TinyViT().eval(), _x(1)
    with AblationCAM(vit, vit.norm1, reshape_transform=TokenReshape()) as cam:
        res = cam.explain(x, targets=2)
    y = res.logits[0, 2]
    for k in (0, 5):
        def hook(m, i, o, k=k):
            o = o.clone()
            o[:, 1:, k] = 0  # channel k of the (C, 4, 4) grid = feature k of the 16 patch tokens; CLS kept
            return o
        h = vit.norm1.register_forward_hook(hook)
        with torch.no_grad():
            yk = vit(x)[0, 2]
        h.remove()
        torch.testing.assert_close(res.weights[0, k], (y - yk) / y, rtol=1e-4, atol=1e-6)


def test_token_reshape_layouts_and_errors():
    t = torch.arange(2 * 7 * 3, dtype=torch.float32).view(2, 7, 3)
    out = TokenReshape(height=2, width=3)(t)
    assert out.shape == (2, 3, 2, 3)
    assert float(out[1, 2, 1, 0]) == float(t[1, 1 + 3, 2])  # token 1 + (row 1 * 3 + col 0), feature 2
    assert TokenReshape(prefix_tokens=0)(torch.zeros(1, 9, 2)).shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="grid"):
        TokenReshape()(torch.zeros(1, 8, 2))  # 7 tokens are not a square
    with pytest.raises(ValueError, match=r"\(B, N, C\)"):
        TokenReshape()(torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="prefix_tokens"):
        TokenReshape(prefix_tokens=-1)


def test_reshape_transform_must_give_bkhw():
    vit = TinyViT().eval()
    with GradCAM(vit, vit.norm1, reshape_transform=lambda t: t) as cam:
        with pytest.raises(ValueError, match="reshape_transform must map"):
            cam(_x())
    with pytest.raises(TypeError, match="callable"):
        GradCAM(vit, vit.norm1, reshape_transform="vit")


# ---------------------------------------------------------------------- layers the logits do not see
class SideBranch(nn.Module):
    """``aux`` runs in the forward but its output never reaches the logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.aux = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 3)
        self.side = None

    def forward(self, x):
        self.side = self.aux(x)  # computed, stored, unused by the prediction
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("name", list(METHODS))
def test_layer_off_the_logits_path_is_detected(name):
    model = SideBranch().eval()
    with gk.create(name, model, target_layer=model.aux[1], **METHODS[name]) as cam:
        with pytest.raises(ValueError, match="do not depend on"):
            cam(_x())
    # on the path: fine; and in a list, the off-path layer is still named
    with gk.create(name, model, target_layer=[model.act, model.aux[1]], **METHODS[name]) as cam:
        with pytest.raises(ValueError, match=r"do not depend on target layer aux\.1"):
            cam(_x())
    assert all(not m._forward_hooks for m in model.modules())


def test_score_cam_off_path_detection_works_for_a_frozen_model():
    model = SideBranch().eval().requires_grad_(False)
    with ScoreCAM(model, model.aux[1]) as cam:
        with pytest.raises(ValueError, match="do not depend on"):
            cam(_x())
    with ScoreCAM(model, model.act) as cam:
        assert float(cam(_x()).max()) > 0
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()  # used twice
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.relu(self.c2(self.relu(self.c1(x)))).mean(dim=(2, 3)))


def test_module_that_runs_twice_is_a_clear_error():
    model = Reused().eval()
    with GradCAM(model, model.relu) as cam:
        with pytest.raises(ValueError, match="2 times"):
            cam(_x())


# ---------------------------------------------------------------------- non-finite input and output
@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_is_a_clear_error(name, bad):
    model, x = _cnn(), _x(3)
    x[1, 0, 3, 4] = bad
    with gk.create(name, model, target_layer=model.cam_layer(), **METHODS[name]) as cam:
        with pytest.raises(ValueError, match=r"input x contains (NaN|inf).*sample\(s\) \[1\]"):
            cam(x)


@pytest.mark.parametrize("name", list(METHODS))
def test_non_finite_logits_are_a_clear_error(name):
    model = _cnn()
    with torch.no_grad():
        model.head.bias[1] = float("nan")
    with gk.create(name, model, target_layer=model.cam_layer(), **METHODS[name]) as cam:
        with pytest.raises(ValueError, match=r"logits\) contains NaN"):
            cam(_x(), targets=0)


class _ConvReluHead(nn.Module):
    """conv -> ReLU -> pooled linear head; subclasses change what happens between the ReLU and the head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 3)


class _InfInside(_ConvReluHead):
    """Finite input and finite logits, but the target layer's output has an inf (clamped later)."""

    def forward(self, x):
        a = self.act(self.conv(x) / (x - x[0, 0, 0, 0]).abs().amin().clamp_max(0.0))  # 1/0 -> inf
        return self.head(a.clamp_max(1.0).mean(dim=(2, 3)))


class _SqrtAfter(_ConvReluHead):
    """dy/dA of sqrt(A) at A = 0 is inf: finite logits, non-finite gradient."""

    def forward(self, x):
        return self.head(torch.sqrt(self.act(self.conv(x))).mean(dim=(2, 3)))


@pytest.mark.parametrize("name", list(METHODS))
def test_non_finite_activations_are_a_clear_error(name):
    model = _InfInside().eval()
    with gk.create(name, model, target_layer=model.act, **METHODS[name]) as cam:
        with pytest.raises(ValueError, match=r"activations of target layer act .*contains inf"):
            cam(_x(), targets=0)


@pytest.mark.parametrize("name", ["grad-cam", "grad-cam++", "smooth-grad-cam++", "cf-cam"])
def test_non_finite_gradient_is_a_clear_error(name):
    model = _SqrtAfter().eval()
    with gk.create(name, model, target_layer=model.act, **METHODS[name]) as cam:
        with pytest.raises(ValueError, match=r"gradient of the target logits at target layer act .*contains"):
            cam(_x(), targets=0)
