"""DTFD's pseudo-bag gather by hand (``regroup``, issue 17) against the indexing it replaced.

The reference below is the implementation before the change, kept verbatim in substance:
``h[i, keep]`` per bag, then ``h_i[index]`` into (G, L, H) pseudo-bags, both differentiated by
autograd's indexing backward. Outputs, the tier-1 loss and every gradient (parameters and the
input features) must agree to float32 tolerance, for bags divisible and not divisible by the
number of groups, a padded batch, and one-instance and all-padding bags.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from histomil.models import create_model
from histomil.models.base import masked_softmax
from histomil.models.dtfd import pseudo_bag_index, regroup
from histomil.nn.attention import weighted_sum

D = 6


def _reference(model, x, mask, label):
    """The pre-issue-17 DTFD forward (eval mode: every bag splits with a fresh seeded generator)."""
    h = model.fc(x)
    b, n, _ = h.shape
    scores, weights = h.new_zeros(b, n), h.new_zeros(b, n)
    logits, auxes = [], []
    for i in range(b):
        keep = torch.arange(n) if mask is None else mask[i].nonzero()[:, 0]
        if keep.numel() == 0:
            logits.append(model.classifier2(h.new_zeros(h.shape[-1])))
            auxes.append(h.new_zeros(()))
            continue
        hi = h[i, keep]
        index, valid = pseudo_bag_index(hi.shape[0], model.n_groups, model._generator())
        hg = hi[index]
        s1 = model.attention1(hg)
        w1 = model.pool_weights(s1, valid)
        f = weighted_sum(hg, w1)[:, 0]
        w2 = masked_softmax(model.attention2(f[None]), None)[0]
        z = (w2 * f).sum(0)
        si = hi.new_zeros(hi.shape[0]).index_put((index[valid],), s1[..., 0][valid])
        wi = hi.new_zeros(hi.shape[0]).index_put((index[valid],), (w1[..., 0] * w2)[valid])
        scores = scores.index_put((torch.full_like(keep, i), keep), si)
        weights = weights.index_put((torch.full_like(keep, i), keep), wi)
        pseudo = model.classifier1(f)
        auxes.append(F.cross_entropy(pseudo, label[i].long().expand(pseudo.shape[0])))
        logits.append(model.classifier2(z))
    return torch.stack(logits), scores, weights, torch.stack(auxes).mean()


def _loss(logits, scores, weights, aux):
    # every output reaches the gradient, with unequal weights so that no term can hide another
    return logits.square().sum() + (scores * 0.3).sin().sum() + weights.square().sum() * 5 + aux


def _grads(model, x, fn):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = fn(x)
    _loss(*out).backward()
    return out, x.grad, {k: p.grad.clone() for k, p in model.named_parameters()}


def _check_against_reference(model, x, mask, label):
    def new(xx):
        out = model(xx, mask=mask, label=label)
        return out.logits, out.scores[..., 0], out.weights[..., 0], out.aux_loss

    ref_out, ref_gx, ref_gp = _grads(model, x, lambda xx: _reference(model, xx, mask, label))
    new_out, new_gx, new_gp = _grads(model, x, new)
    for a, b in zip(new_out, ref_out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new_gx, ref_gx, rtol=1e-5, atol=1e-6)
    assert new_gp.keys() == ref_gp.keys()
    for k in ref_gp:
        torch.testing.assert_close(new_gp[k], ref_gp[k], rtol=1e-5, atol=1e-6, msg=k)
    if mask is not None:  # padding instances get no gradient at all
        assert torch.equal(new_gx[~mask], torch.zeros_like(new_gx[~mask]))


@pytest.mark.parametrize(
    ("lengths", "n"),
    [((8,), 8), ((9,), 9), ((3,), 3), ((1,), 1), ((5, 11), 11), ((0, 7), 7), ((4, 4), 4)],
)
def test_regroup_matches_indexing_in_outputs_and_gradients(lengths, n):
    torch.manual_seed(len(lengths) * 100 + n)
    model = create_model("dtfd", D, 3, attn_dim=4, hidden=10).eval()
    x = torch.randn(len(lengths), n, D)
    mask = torch.tensor([[j < k for j in range(n)] for k in lengths])
    if all(k == n for k in lengths):
        mask = None
    label = torch.tensor([2, 1][: len(lengths)])
    _check_against_reference(model, x, mask, label)


def test_regroup_with_padding_before_and_between_real_instances():
    """Real instances that are not the first rows of the bag: the split indexes the real
    instances, so the rows gathered must be ``keep[index]``, not ``index``."""
    torch.manual_seed(5)
    model = create_model("dtfd", D, 3, attn_dim=4, hidden=10).eval()
    x = torch.randn(2, 9, D)
    mask = torch.tensor(
        [[True, False, True, True, False, True, True, True, False], [False, False] + [True] * 7]
    )
    _check_against_reference(model, x, mask, torch.tensor([2, 1]))


def test_regroup_by_hand():
    """Slots hold their rows, padding slots are zero; each row's gradient is its slot's, and a
    row in no slot gets zero."""
    h = torch.arange(12.0).reshape(4, 3).requires_grad_(True)
    index = torch.tensor([[2, 0], [3, 0]])  # row 1 in no slot; slot (1, 1) padding
    valid = torch.tensor([[True, True], [True, False]])
    out = regroup(h, index, valid)
    expect = torch.stack([torch.stack([h[2], h[0]]), torch.stack([h[3], torch.zeros(3)])])
    assert torch.equal(out, expect.detach())
    grad = torch.arange(1.0, 13.0).reshape(2, 2, 3)
    out.backward(grad)
    assert torch.equal(h.grad, torch.stack([grad[0, 1], torch.zeros(3), grad[0, 0], grad[1, 0]]))
