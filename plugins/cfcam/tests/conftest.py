import pytest
import torch
import torch.nn as nn


class ProbeNet(nn.Module):
    """Input (B, K, h, w) passes through ``self.layer`` (Identity, the CAM target), so the
    activations are the input itself and the gradient is known in closed form:
    y = fc(mean_ij(A * S)), hence dy_c/dA_kij = W_ck * S_ij / (h w)."""

    def __init__(self, k=12, c=3, h=6, w=6, seed=0, spatial=True):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.layer = nn.Identity()
        s = torch.rand(h, w, generator=g) + 0.5 if spatial else torch.ones(h, w)
        self.register_buffer("S", s)
        self.fc = nn.Linear(k, c)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(c, k, generator=g))
            self.fc.bias.copy_(torch.randn(c, generator=g))

    def forward(self, x):
        return self.fc((self.layer(x) * self.S).mean(dim=(2, 3)))

    def grad(self, c):
        k = self.fc.weight.shape[1]
        h, w = self.S.shape
        return self.fc.weight[c].view(k, 1, 1) * self.S / (h * w)


@pytest.fixture
def probe():
    torch.manual_seed(0)
    return ProbeNet()


@pytest.fixture
def probe_input():
    g = torch.Generator().manual_seed(3)
    return torch.rand(2, 12, 6, 6, generator=g)


@pytest.fixture
def make_probe():
    """The :class:`ProbeNet` class, for tests that need other sizes."""
    return ProbeNet
