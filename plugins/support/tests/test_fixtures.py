import pytest
import torch

import gradkit_core as gk
from gradkit_support.data import digits, lm_batch, loader, split_corpus, stdlib_corpus
from gradkit_support.models import SmallCNN, TinyGPT, logits_of, state_bytes


def test_digits_split_is_stratified_scaled_and_seeded():
    xtr, ytr, xte, yte = digits(seed=0)
    assert xtr.shape[1:] == (1, 8, 8) and len(xtr) + len(xte) == 1797
    assert float(xtr.min()) >= 0.0 and float(xtr.max()) <= 1.0
    assert torch.bincount(yte).min() >= 40  # every class in the 25 % test split
    assert torch.equal(digits(seed=0)[3], yte) and not torch.equal(digits(seed=1)[3], yte)
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=1.5)


def test_loader_order_is_fixed_by_seed():
    x, y = torch.arange(20.0)[:, None], torch.arange(20)
    first = [b[1].tolist() for b in loader(x, y, batch_size=5, seed=3)]
    assert first == [b[1].tolist() for b in loader(x, y, batch_size=5, seed=3)]
    assert first != [b[1].tolist() for b in loader(x, y, batch_size=5, seed=4)]
    with pytest.raises(ValueError, match="rows"):
        loader(x, y[:3])


def test_stdlib_corpus_is_bounded_deterministic_python_source():
    a = stdlib_corpus(50_000)
    assert len(a) == 50_000 and a == stdlib_corpus(50_000)
    assert b"def " in a and a.startswith(b"# file: ")
    train, val = split_corpus(a, 0.1)
    assert len(val) == 5_000 and len(train) == 45_000


def test_lm_batch_targets_are_inputs_shifted_by_one():
    tokens = torch.arange(100)
    x, y = lm_batch(tokens, block_size=8, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y, x + 1)


def test_tiny_gpt_is_causal():
    torch.manual_seed(0)
    model = TinyGPT(block_size=16, d_model=32, n_layer=2, n_head=4).eval()
    idx = torch.randint(0, 256, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 256
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6), "logits before position 8 must not see later tokens"
    assert not torch.allclose(a[:, 8:], b[:, 8:])
    _, loss = model(idx, idx)
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_small_cnn_shapes_last_conv_and_registry():
    cnn = gk.create("small-cnn")
    assert isinstance(cnn, SmallCNN) and cnn.last_conv is cnn.features[5]
    assert cnn(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(ValueError, match="B, C, H, W"):
        cnn(torch.rand(1, 8, 8))


def test_logits_of_and_state_bytes():
    t = torch.zeros(2, 3)
    assert logits_of(t) is t and logits_of((t, 1.0)) is t
    assert logits_of(type("Out", (), {"logits": t})()) is t
    with pytest.raises(TypeError, match="logits"):
        logits_of("nope")
    p = torch.nn.Parameter(torch.zeros(10))
    opt = torch.optim.Adam([p])
    p.grad = torch.ones(10)
    opt.step()
    assert state_bytes(opt) == 2 * 10 * 4 + 4  # two moments + the scalar step


def test_bigram_logits_are_the_rows_of_W_and_seeded():
    from gradkit_support.models import Bigram

    m = Bigram(vocab=4, seed=3)
    ids = torch.tensor([[2, 0, 3]])
    torch.testing.assert_close(m(ids)[0], m.W.detach()[[2, 0, 3]])
    torch.testing.assert_close(Bigram(4, seed=3).W, m.W)
    assert not torch.equal(Bigram(4, seed=4).W, m.W)
