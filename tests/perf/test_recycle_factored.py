"""The recycle network's factored attention equals ``nn.MultiheadAttention`` (the previous code).

:meth:`GlobalRecycle._factored` moves the key/value projections to the query side (issue 17:
MHIM-v2's recycle network spent 2 M D^2 multiply-adds per step projecting every masked
instance). The reference below is the implementation it replaced, kept verbatim: outputs and
gradients (instances, every parameter) must agree to float32 tolerance, for one bag and for a
batch, one and several queries, and in a whole MHIM-v2 training step (teacher scores, masking,
recycle tokens, consistency and rank losses) with AB-MIL, TransMIL and DS-MIL students.
"""

from __future__ import annotations

import pytest
import torch

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.objectives.base import TrainContext
from histomil.objectives.mhim import MHIM
from histomil.objectives.mhim.recycle import GlobalRecycle


def reference_forward(self: GlobalRecycle, h: torch.Tensor) -> torch.Tensor:
    """GlobalRecycle.forward before issue 17 (nn.MultiheadAttention on all masked instances)."""
    q = self.norm(self.queries).unsqueeze(0).expand(h.shape[0], -1, -1)
    kv = self.norm(h)
    out, _ = self.attn(q, kv, kv, need_weights=False)
    out = self.out_drop(out)
    if self.training:
        self._pending = out.detach().mean(dim=0)
    return out


def _grads(module: torch.nn.Module, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()] + [t.grad.clone() for t in tensors]


def _recycle(dim: int, k: int, seed: int) -> GlobalRecycle:
    r = GlobalRecycle(dim, k, 8, seed=seed)
    with torch.no_grad():  # non-zero biases and queries of a realistic size
        g = torch.Generator().manual_seed(seed)
        r.attn.in_proj_bias.copy_(torch.randn(3 * dim, generator=g) * 0.1)
        r.attn.out_proj.bias.copy_(torch.randn(dim, generator=g) * 0.1)
        r.queries.copy_(torch.randn(k, dim, generator=g))
    return r


@pytest.mark.parametrize(("batch", "k", "m"), [(1, 1, 37), (3, 4, 20), (2, 1, 1)])
def test_factored_attention_matches_multihead_attention(batch: int, k: int, m: int) -> None:
    r = _recycle(64, k, seed=batch + k)
    h = torch.randn(batch, m, 64, requires_grad=True)
    weights = torch.randn(batch, k, 64)
    r.train()

    def refuse(*args, **kwargs):
        raise AssertionError("the factored path must not project every instance")

    with pytest.MonkeyPatch.context() as mp:  # fails on the old code, which called it
        mp.setattr(torch.nn.MultiheadAttention, "forward", refuse)
        out = r(h)
    (out * weights).sum().backward()
    got, got_grads, got_pending = out.detach(), _grads(r, h), r._pending
    r.zero_grad()
    h.grad = None
    want = reference_forward(r, h)
    (want * weights).sum().backward()
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_pending, r._pending, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_grads, _grads(r, h), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_dropout_on_attention_weights_still_uses_multihead_attention() -> None:
    r = GlobalRecycle(32, 1, 8, dropout=0.5).train()
    h = torch.randn(1, 10, 32)
    torch.manual_seed(0)
    got = r(h)
    torch.manual_seed(0)
    torch.testing.assert_close(got, reference_forward(r, h))


SMALL = {
    "abmil": {"hidden": 32, "attn_dim": 8, "dropout": 0.0},
    "transmil": {"hidden": 32, "heads": 8, "landmarks": 4, "dropout": 0.0},
    "dsmil": {"hidden": 32, "dropout": 0.0},
}


def _step(student: str, monkeypatch: pytest.MonkeyPatch | None, bag: Bag):
    torch.manual_seed(0)
    model = create_model(student, 12, 1, **SMALL[student])
    baseline = create_model(student, 12, 1, **SMALL[student]).state_dict()
    obj = MHIM(masking={"beta_h": 0.1}, rank={"weight": 1.0})
    obj.setup(model, TrainContext(task="classification", seed=3, baseline_state=baseline))
    with torch.no_grad():
        obj.recycle.attn.in_proj_bias.normal_(0, 0.1)
    if monkeypatch is not None:
        monkeypatch.setattr(GlobalRecycle, "forward", reference_forward)
    model.train()
    obj.train()
    res = obj(model, bag)
    res.loss.backward()
    params = [*model.parameters(), *(p for p in obj.parameters() if p.requires_grad)]
    return res, [p.grad.clone() for p in params]


@pytest.mark.parametrize("student", list(SMALL))
def test_mhim_step_matches_the_reference(student: str, monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(7)
    labels = torch.zeros(60, dtype=torch.int8)
    labels[:6] = 1
    bag = Bag("s", torch.randn(60, 12, generator=g), 1, patch_labels=labels)
    got, got_grads = _step(student, None, bag)
    want, want_grads = _step(student, monkeypatch, bag)
    assert got.terms["n_recycled"] == want.terms["n_recycled"] > 0
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.output.logits, want.output.logits, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
