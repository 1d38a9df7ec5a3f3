"""DS-MIL's class-aware instance logits (MHIM-v2 Eq. 6) as one matrix product (issue 17),
checked against the form it replaced: ``fcc`` applied as a convolution to every instance's
(C, H) share, after a second ``aggregate`` pass."""

from __future__ import annotations

import pytest
import torch

from histomil.models import create_model


def _reference(model, h: torch.Tensor) -> torch.Tensor:
    """The implementation before issue 17, kept verbatim as the reference."""
    out = model.aggregate(h, None)
    weights = out.weights  # (B, N, C)
    b, n, c = weights.shape
    per = weights[..., None] * model.v(h)[:, :, None, :]  # (B, N, C, H)
    return model.fcc(per.reshape(b * n, c, -1)).reshape(b, n, c)


@pytest.mark.parametrize("n_classes", [1, 3])
@pytest.mark.parametrize("passing_v", [False, True])
@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_equals_the_convolution_form_with_gradients(n_classes, passing_v, threshold):
    torch.manual_seed(n_classes + 2 * passing_v)
    model = create_model(
        "dsmil",
        in_dim=12,
        n_classes=n_classes,
        hidden=16,
        dropout=0.0,
        passing_v=passing_v,
        attention_threshold=threshold,
    ).train()
    # the MHIM teacher scores one bag; a batch of two bags checks the batch axis as well
    h = torch.randn(2, 37, 16, dtype=torch.float64)
    model = model.double()
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    ref = _reference(model, h1)
    new = model.class_aware_logits(h2)
    assert new.shape == ref.shape == (2, 37, n_classes)
    torch.testing.assert_close(new, ref, rtol=1e-10, atol=1e-12)
    # reusing the caller's aggregate output gives the same values
    torch.testing.assert_close(model.class_aware_logits(h, model.aggregate(h, None)), ref.detach())
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad((ref * g).sum(), [h1, *model.parameters()], allow_unused=True)
    grads_new = torch.autograd.grad((new * g).sum(), [h2, *model.parameters()], allow_unused=True)
    for a, b in zip(grads_ref, grads_new, strict=True):
        if a is None or b is None:
            assert a is None and b is None or float((a if a is not None else b).abs().max()) == 0
            continue
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)


def test_float32_matches_the_reference_to_float32_tolerance():
    torch.manual_seed(0)
    model = create_model("dsmil", in_dim=64, n_classes=1, hidden=64, dropout=0.0).eval()
    h = torch.randn(1, 2000, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.class_aware_logits(h), _reference(model, h))


def test_uses_the_given_aggregate_output_instead_of_recomputing_it():
    torch.manual_seed(0)
    model = create_model("dsmil", in_dim=8, n_classes=1, hidden=8, dropout=0.0).eval()
    h = torch.randn(1, 10, 8)
    out = model.aggregate(h, None)
    out.weights = torch.zeros_like(out.weights)  # a share is then just the bias
    per = model.class_aware_logits(h, out)
    torch.testing.assert_close(per, model.fcc.bias.expand(1, 10, 1))
