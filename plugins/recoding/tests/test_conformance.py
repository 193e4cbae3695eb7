"""The core's architecture conformance suite for the recoding LSTM (and its alpha = 0 / no-recoding forms)."""

import torch

from gradkit_core.testing.architectures import ArchitectureConformance


class TestRecodingLSTMConformance(ArchitectureConformance):
    component = "recoding-lstm"
    component_kwargs = {"vocab_size": 12, "emb_size": 8, "hidden_size": 8, "num_layers": 2, "alpha": 0.1}

    def example_input(self):
        return torch.randint(0, 12, (2, 5), generator=torch.Generator().manual_seed(0))

    def output(self, module, x):
        return module(x, targets=torch.roll(x, -1, 1)).logits

    def bad_inputs(self):
        x = self.example_input()
        return super().bad_inputs() + [torch.full_like(x, 12), x.float(), x[0]]


class TestPlainLSTMConformance(TestRecodingLSTMConformance):
    component_kwargs = {**TestRecodingLSTMConformance.component_kwargs, "recoding": False}
