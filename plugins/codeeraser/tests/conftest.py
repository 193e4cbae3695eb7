import pytest
import torch
import torch.nn as nn

from gradkit_support.models import Bigram


class HFLike(nn.Module):
    """An HF-style causal LM: keyword inputs, output object with ``.logits``."""

    def __init__(self, vocab: int = 7):
        super().__init__()
        self.inner = Bigram(vocab)

    def forward(self, input_ids=None, attention_mask=None):
        class Out:
            pass

        o = Out()
        o.logits = self.inner(input_ids)
        return o


@pytest.fixture
def bigram():
    return Bigram


@pytest.fixture
def hflike():
    return HFLike
