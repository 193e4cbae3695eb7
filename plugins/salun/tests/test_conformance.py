"""Every unlearner of the plugin passes the core's unlearner conformance suite."""

import pytest
import torch

from gradkit_core.testing.unlearners import UnlearnerConformance


class _Base(UnlearnerConformance):
    unlearn_kwargs = {"epochs": 1}

    @pytest.fixture
    def make_model(self, make_mlp):
        return make_mlp

    @pytest.fixture
    def forget_loader(self, f_loader):
        return f_loader

    @pytest.fixture
    def retain_loader(self, r_loader):
        return r_loader


class TestSalUnConformance(_Base):
    component = "salun"


class TestSalUnSoftConformance(_Base):
    component = "salun-soft"


class TestRandomLabelConformance(_Base):
    component = "random-label"


class TestFineTuneConformance(_Base):
    component = "fine-tune"


class TestGradientAscentConformance(_Base):
    component = "gradient-ascent"
    uses_retain = False


class TestL1SparseConformance(_Base):
    component = "l1-sparse"


class TestRetrainConformance(_Base):
    component = "retrain"


def test_api_from_issue(make_mlp, f_loader, r_loader):
    """gk.create("salun", model, ratio=0.5).unlearn(forget, retain, epochs=...) returns the model."""
    import gradkit_core as gk

    model = make_mlp()
    out = gk.create("salun", model, ratio=0.5).unlearn(f_loader, r_loader, epochs=1)
    assert out is model
    assert not model.training


class TestSalUnDiffusionConformance(UnlearnerConformance):
    component = "salun-diffusion"
    component_kwargs = {"lr": 1e-2}
    unlearn_kwargs = {"max_steps": 3}

    @pytest.fixture
    def make_model(self):
        from gradkit_salun.diffusion import TinyCondEps

        def make():
            torch.manual_seed(0)
            return TinyCondEps(hidden=16, emb=8)

        return make

    @pytest.fixture
    def forget_loader(self):
        g = torch.Generator().manual_seed(0)
        return [(torch.rand(4, 64, generator=g) * 2 - 1, torch.zeros(4, dtype=torch.long)) for _ in range(2)]

    @pytest.fixture
    def retain_loader(self):
        g = torch.Generator().manual_seed(1)
        return [(torch.rand(4, 64, generator=g) * 2 - 1, torch.randint(1, 10, (4,), generator=g)) for _ in range(3)]
