"""The core's architecture conformance suite for the three prompt-model backbones.

A prompt model takes ``(xs, ys)``; the suite's single input is ``xs`` and the labels are a fixed
function of it (the sign of the first coordinate), so every rule sees a real prompt."""

import torch

from gradkit_core.testing.architectures import ArchitectureConformance


class _Prompt(ArchitectureConformance):
    component_kwargs = {"n_dims": 4, "n_embd": 8, "n_layer": 1, "n_positions": 8}

    def example_input(self):
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 2, (3, 6, 4), generator=g).float() * 2 - 1

    def output(self, module, x):
        ys = x[..., 0].clone() if x.dim() == 3 else torch.zeros(x.shape[:-1])
        return module(x, ys)

    def bad_inputs(self):
        x = self.example_input()
        return super().bad_inputs() + [x[0], x[:0]]


class TestPromptTransformer(_Prompt):
    component = "icl-transformer"
    component_kwargs = {**_Prompt.component_kwargs, "n_head": 2}

    def bad_inputs(self):  # longer than n_positions
        return super().bad_inputs() + [torch.ones(2, 9, 4)]


class TestPromptLSTM(_Prompt):
    component = "icl-lstm"


class TestPromptLinRec(_Prompt):
    component = "icl-linrec"
