"""CLAM's clustering loss gathers the selected instances straight from ``h`` (issue 17).

Before, each bag's real instances were first copied out (``h[i, keep]``, an (N, H) copy whose
backward materialised another (N, H) gradient) and the top/bottom k rows were indexed from that
copy. The reference below is the replaced implementation, kept verbatim: the loss and the
gradients (instances and every parameter) must agree to float32 tolerance, for CLAM-SB/MB,
binary and multi-class, subtyping on/off, both instance losses, one bag and a padded batch.
"""

from __future__ import annotations

import pytest
import torch

from histomil.models import create_model
from histomil.models.clam import _CLAMBase


def reference_clustering_loss(self, h, scores, mask, label):
    """_CLAMBase._clustering_loss before issue 17."""
    losses = []
    for i in range(h.shape[0]):
        keep = mask[i] if mask is not None else torch.ones_like(scores[i, :, 0], dtype=bool)
        hi, si = h[i, keep], scores[i, keep]
        k = min(self.k_sample, hi.shape[0] // 2)
        y = int(label[i].clamp(0, self.n_inst - 1)) if self.n_classes > 1 else int(label[i] > 0)
        total = hi.new_zeros(())
        if k == 0:
            losses.append(total + 0.0 * hi.sum())
            continue
        for c, clf in enumerate(self.instance_classifiers):
            col = si[:, c if self.multi_branch else 0]
            if c == y:
                top, bottom = col.topk(k).indices, (-col).topk(k).indices
                feats = torch.cat([hi[top], hi[bottom]])
                target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(h.device)
            elif self.subtyping:
                feats = hi[col.topk(k).indices]
                target = torch.zeros(k, dtype=torch.long, device=h.device)
            else:
                continue
            total = total + self._inst_loss(clf(feats), target)
        losses.append(total)
    return torch.stack(losses).mean()


def _run(model, x, mask, label):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    torch.manual_seed(0)  # same dropout mask in both runs
    out = model(x, mask=mask, label=label)
    out.aux_loss.backward()
    grads = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
    return out.aux_loss.detach(), x.grad.clone(), grads


CASES = [
    ("clam_sb", 1, {}),
    ("clam_mb", 1, {}),
    ("clam_sb", 3, {"subtyping": True}),
    ("clam_mb", 3, {"subtyping": True, "inst_loss": "svm"}),
    ("clam_mb", 3, {"subtyping": False}),
]


@pytest.mark.parametrize(("name", "n_classes", "params"), CASES)
@pytest.mark.parametrize("batched", [False, True])
def test_gathered_clustering_loss_equals_the_reference(name, n_classes, params, batched):
    torch.manual_seed(1)
    model = create_model(name, 24, n_classes, k_sample=4, **params).train()
    if batched:  # three bags, the last two padded; one with too few instances for k
        x = torch.randn(3, 30, 24)
        mask = torch.ones(3, 30, dtype=torch.bool)
        mask[1, 3:12] = False  # holes, not only trailing padding: rows != positions
        mask[1, 25:] = False
        mask[2, 1:] = False
        label = torch.tensor([1, 0, 2 if n_classes > 1 else 1])
    else:
        x, mask, label = torch.randn(1, 50, 24), None, torch.tensor([1])
    new = _run(model, x, mask, label)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_CLAMBase, "_clustering_loss", reference_clustering_loss)
        ref = _run(model, x, mask, label)
    torch.testing.assert_close(new[0], ref[0])
    assert new[0] > 0
    torch.testing.assert_close(new[1], ref[1])
    assert new[1].abs().sum() > 0
    for a, b in zip(new[2], ref[2], strict=True):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b)
