"""histomil.nn.transformer.EncoderLayer (issue 17): torch's TransformerEncoderLayer with the
attention written out in training so its dropout uses the cheap CPU mask.

Reference: ``nn.TransformerEncoderLayer`` with the same weights. With the dropout masks forced
to "keep everything", and with p = 0 (no dropout call at all), the written-out
attention must give the parent's outputs and gradients, with and without key padding (bool and
float masks), pre- and post-norm (in float64: in float32 a ReLU input within rounding of 0 can
flip between the two and change a whole bag's gradients); with dropout on, the attention weights must be dropped with
rate p and rescaled.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import histomil.nn.transformer as tr
from histomil.nn.dropout import Dropout
from histomil.nn.transformer import EncoderLayer


def _pair(norm_first: bool, p: float = 0.3):
    torch.manual_seed(0)
    ours = EncoderLayer(24, 3, 48, dropout=p, batch_first=True, norm_first=norm_first)
    ref = nn.TransformerEncoderLayer(
        24, 3, 48, dropout=0.0, batch_first=True, norm_first=norm_first
    )
    ref.load_state_dict(ours.state_dict())
    return ours.double().train(), ref.double().train()


def _assert_same_gradients(ours, ref, xa, xb, a, b):
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    for (name, pa), pb in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("padding", [None, "bool", "float"])
def test_written_out_attention_equals_torch_without_dropout(norm_first, padding, monkeypatch):
    ours, ref = _pair(norm_first)
    calls = []

    def keep_all(x, p, training=True):  # the manual path, with a mask that keeps everything
        calls.append(p)
        return x

    monkeypatch.setattr(tr, "dropout", keep_all)
    for m in ours.modules():
        if isinstance(m, Dropout):
            m.p = 0.0  # dropout1/2 and the feed-forward dropout off
    x = torch.randn(4, 10, 24, dtype=torch.float64)
    pad = None
    if padding is not None:
        pad = torch.zeros(4, 10, dtype=torch.bool)
        pad[1, 7:] = True
        pad[3, :4] = True
        if padding == "float":
            pad = torch.zeros(4, 10, dtype=torch.float64).masked_fill(pad, float("-inf"))
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a = ours(xa, src_key_padding_mask=pad)
    b = ref(xb, src_key_padding_mask=pad)
    assert calls == [0.3]  # the written-out path ran, with the layer's dropout
    torch.testing.assert_close(a, b)
    _assert_same_gradients(ours, ref, xa, xb, a, b)


def test_padded_keys_get_no_weight_and_dropout_rate_is_p(monkeypatch):
    ours, _ = _pair(True, p=0.25)
    seen = {}
    real = tr.dropout

    def spy(x, p, training=True):
        seen["in"] = x.detach()
        out = real(x, p, training)
        seen["out"] = out.detach()
        return out

    monkeypatch.setattr(tr, "dropout", spy)
    pad = torch.zeros(2, 64, dtype=torch.bool)
    pad[0, 40:] = True
    ours(torch.randn(2, 64, 24, dtype=torch.float64), src_key_padding_mask=pad)
    w, out = seen["in"], seen["out"]  # (2, 3, 64, 64) softmax weights before / after dropout
    assert torch.all(w[0, :, :, 40:] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 64, dtype=torch.float64))
    kept = out != 0
    rate = kept[w != 0].float().mean().item()
    assert abs(rate - 0.75) < 0.02
    torch.testing.assert_close(out[kept], w[kept] / 0.75)


@pytest.mark.parametrize("padding", [False, True])
def test_zero_dropout_in_training_is_the_written_out_attention_without_a_mask(padding, monkeypatch):
    torch.manual_seed(0)
    ours = EncoderLayer(24, 3, 48, dropout=0.0, batch_first=True, norm_first=True)
    ref = nn.TransformerEncoderLayer(24, 3, 48, dropout=0.0, batch_first=True, norm_first=True)
    ref.load_state_dict(ours.state_dict())
    ours, ref = ours.double().train(), ref.double().train()
    monkeypatch.setattr(tr, "dropout", lambda *a, **k: pytest.fail("dropout drawn with p = 0"))
    parent = []
    real = nn.TransformerEncoderLayer._sa_block
    monkeypatch.setattr(
        nn.TransformerEncoderLayer,
        "_sa_block",
        lambda self, *a, **k: parent.append(type(self)) or real(self, *a, **k),
    )
    pad = None
    if padding:
        pad = torch.zeros(3, 9, dtype=torch.bool)
        pad[0, 5:] = True
    x = torch.randn(3, 9, 24, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a = ours(xa, src_key_padding_mask=pad)
    b = ref(xb, src_key_padding_mask=pad)
    assert parent == [nn.TransformerEncoderLayer]  # only the reference ran torch's attention
    torch.testing.assert_close(a, b)
    _assert_same_gradients(ours, ref, xa, xb, a, b)


def test_eval_runs_the_parent_code(monkeypatch):
    ours, ref = _pair(True, p=0.1)
    monkeypatch.setattr(tr, "dropout", lambda *a, **k: pytest.fail("manual path in eval"))
    x = torch.randn(2, 5, 24, dtype=torch.float64)
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x), ref(x))
    assert all(type(m) is Dropout for m in ours.modules() if isinstance(m, nn.Dropout))


def test_needs_batch_first():
    with pytest.raises(ValueError, match="batch_first"):
        EncoderLayer(8, 2, 16)
