"""histomil.nn.dropout (issue 17): torch's dropout with a cheaper CPU mask.

The mask is a different random draw from torch's, so the checks are: the output and gradient
equal torch's formula (x * mask / (1 - p)) for the mask that was drawn, the keep rate is 1 - p,
seeds reproduce it, and every dropout in the zoo uses it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from histomil.models import create_model, names
from histomil.nn.dropout import Dropout, dropout, keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_output_and_gradient_are_torch_formula_for_the_drawn_mask(p):
    x = torch.randn(37, 11, 5, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(3)
    out = dropout(x, p)
    kept = out.detach() != 0
    ref = torch.where(kept, x.detach() / (1 - p), torch.zeros(()))
    torch.testing.assert_close(out.detach(), ref, rtol=1e-12, atol=0)
    g = torch.randn_like(x)
    out.backward(g)
    torch.testing.assert_close(x.grad, torch.where(kept, g / (1 - p), torch.zeros(())))


def test_same_seed_same_mask_and_calls_differ():
    x = torch.ones(64, 64)
    torch.manual_seed(11)
    a, b = dropout(x, 0.3), dropout(x, 0.3)
    torch.manual_seed(11)
    assert torch.equal(dropout(x, 0.3), a)
    assert not torch.equal(a, b)  # a fresh draw per call


@pytest.mark.parametrize("p", [0.1, 0.25, 0.75])
def test_keep_rate_is_one_minus_p(p):
    torch.manual_seed(0)
    n = 400_000
    rate = keep_mask((n,), p).float().mean().item()
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(rate - (1 - p)) < 6 * sd, (rate, p)


def test_mask_rows_and_columns_are_not_correlated():
    """A generator reused wrongly (e.g. one draw broadcast over a dimension) shows up here."""
    torch.manual_seed(1)
    m = keep_mask((512, 512), 0.5).float()
    assert m.mean(0).std() < 0.05 and m.mean(1).std() < 0.05
    assert not torch.equal(m[0], m[1]) and not torch.equal(m[:, 0], m[:, 1])


def test_eval_p0_and_inplace_fall_back():
    x = torch.randn(8, 4)
    d = Dropout(0.5).eval()
    assert d(x) is x
    assert Dropout(0.0).train()(x) is x
    torch.manual_seed(0)
    inplace = Dropout(0.5, inplace=True).train()(x.clone())
    torch.manual_seed(0)
    assert torch.equal(inplace, nn.functional.dropout(x.clone(), 0.5, True))


def test_dtype_follows_the_input():
    x = torch.randn(100, 100, dtype=torch.bfloat16)
    out = dropout(x, 0.25)
    assert out.dtype == torch.bfloat16
    kept = out != 0
    scale = torch.ones((), dtype=torch.bfloat16).mul_(1 / 0.75)  # 1/(1-p) rounded to bf16
    assert torch.equal(out[kept], x[kept] * scale)


def test_use_fast_dropout_replaces_nested_plain_dropouts():
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
    use_fast_dropout(layer)
    kinds = {type(m) for m in layer.modules() if isinstance(m, nn.Dropout)}
    assert kinds == {Dropout}
    assert layer.dropout1.p == 0.1


@pytest.mark.parametrize("name", names())
def test_every_model_uses_the_fast_dropout(name):
    model = create_model(name, 32, 1)
    plain = [n for n, m in model.named_modules() if type(m) is nn.Dropout]
    assert plain == [], plain


def test_mhim_recycle_network_uses_it():
    from histomil.objectives.mhim.recycle import GlobalRecycle

    rec = GlobalRecycle(32, 4, 2, 0.9, 0.1, seed=0)
    assert [type(m) for m in rec.modules() if isinstance(m, nn.Dropout)] == [Dropout]


@pytest.mark.parametrize(
    ("shape", "p"), [((7,), 0.3), ((3, 5), 0.3), ((8000, 4), 0.3), ((9000, 40), 1 - 1e-7)]
)
def test_mask_is_the_raw_pcg64_stream_read_as_16_bit_integers(shape, p):
    """Pinned by hand: one draw from torch's generator seeds PCG64; its raw 64-bit outputs, read
    as consecutive 16-bit integers, are compared with round(p * 65536), capped at 65535 so that
    a p just below 1 keeps 1 in 65536 (65536 would wrap to 0 in 16 bits and keep everything)."""
    import numpy as np

    n = math.prod(shape)
    torch.manual_seed(21)
    seed = int(torch.randint(0, 2**62, (1,)).item())
    words = np.random.PCG64(seed).random_raw(-(-n // 4))
    expect = np.frombuffer(words.tobytes(), dtype=np.uint16)[:n] >= min(round(p * 65536), 65535)
    torch.manual_seed(21)
    got = keep_mask(shape, p)
    assert got.shape == shape and got.dtype == torch.bool
    assert torch.equal(got.reshape(-1), torch.from_numpy(expect))
    if p > 0.5:  # about 1 in 65536 kept, not all of them
        assert 0 < int(expect.sum()) < n / 1000


def test_p_of_one_drops_everything_and_above_one_is_refused():
    """p >= 1 goes to torch's dropout: all zeros at 1 (nothing to draw), an error above."""
    x = torch.randn(5, 4)
    assert torch.equal(dropout(x, 1.0), torch.zeros(5, 4))
    assert torch.equal(dropout(x, 1.0, training=False), x)
    with pytest.raises(ValueError, match="probability"):
        dropout(x, 1.5)


def test_use_fast_dropout_keeps_inplace():
    seq = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.2, inplace=True), nn.Dropout(0.3))
    use_fast_dropout(seq)
    assert [(type(m), m.p, m.inplace) for m in seq[1:]] == [
        (Dropout, 0.2, True),
        (Dropout, 0.3, False),
    ]


def test_neighbouring_elements_are_independent():
    """Four mask elements come from one 64-bit word: neighbours must not be correlated."""
    torch.manual_seed(5)
    m = keep_mask((400_000,), 0.5).float()
    both = (m[:-1] * m[1:]).mean().item()
    assert abs(both - 0.25) < 6 * math.sqrt(0.25 * 0.75 / 400_000)
