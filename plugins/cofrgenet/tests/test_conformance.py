"""The core's architecture conformance suite for every CoFrGeNet module."""

import torch

from gradkit_core.testing.architectures import ArchitectureConformance


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


class TestLadderConformance(ArchitectureConformance):
    component = "cofr-ladder"
    component_kwargs = {"in_features": 6, "depth": 3, "n_ladders": 2}

    def example_input(self):
        return _x(4, 6)


class TestCffnConformance(ArchitectureConformance):
    component = "cffn"
    component_kwargs = {"d_model": 8, "depth": 3}

    def example_input(self):
        return _x(2, 5, 8)


class TestCAttnUConformance(ArchitectureConformance):
    component = "cattn-u"
    component_kwargs = {"d_model": 8, "block_size": 6}

    def example_input(self):
        return _x(2, 6, 8)

    def bad_inputs(self):  # token mixers need (B, T, d) with T <= block_size
        x = self.example_input()
        return super().bad_inputs() + [x[0], torch.zeros(2, 7, 8)]


class TestCAttnMConformance(ArchitectureConformance):
    component = "cattn-m"
    component_kwargs = {"d_model": 8, "block_size": 6, "depth": 2}

    def example_input(self):
        return _x(2, 6, 8)

    def bad_inputs(self):
        x = self.example_input()
        return super().bad_inputs() + [x[0], torch.zeros(2, 7, 8)]


class TestCofrgenetGPTConformance(ArchitectureConformance):
    component = "cofrgenet-gpt"
    component_kwargs = {"vocab_size": 16, "block_size": 8, "d_model": 16, "n_layer": 1, "n_head": 2, "depth": 2}

    def example_input(self):
        return torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(0))

    def bad_inputs(self):
        x = self.example_input()
        return super().bad_inputs() + [torch.full_like(x, 16), x.float(), x[0], torch.zeros(2, 9, dtype=torch.long)]
