import pytest
import torch
import torch.nn as nn


class Bigram(nn.Module):
    """logits[b, t] = W[ids[b, t]]: a causal LM whose per-position loss is easy to compute by hand."""

    def __init__(self, vocab: int = 7, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(vocab, vocab, generator=g))

    def forward(self, ids):
        return self.W[ids]


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


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # the test machine is shared: one intra-op thread avoids oversubscription stalls
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
