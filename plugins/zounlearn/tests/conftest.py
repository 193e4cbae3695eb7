import pytest
import torch
import torch.nn as nn


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # the test machine is shared: one intra-op thread avoids oversubscription stalls
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Bigram(nn.Module):
    """logits[b, t] = W[ids[b, t]]: a causal LM whose log-probabilities are easy to compute by hand."""

    def __init__(self, vocab: int = 7, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(vocab, vocab, generator=g))

    def forward(self, ids):
        return self.W[ids]


@pytest.fixture
def bigram():
    return Bigram
