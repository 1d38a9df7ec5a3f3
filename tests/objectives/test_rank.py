from __future__ import annotations

import math

import pytest
import torch

from histomil.objectives import rank_loss


def _brute(scores, labels, sigma, margin):
    total, n = 0.0, 0
    for i in range(len(scores)):
        for j in range(len(scores)):
            if labels[i] == 1 and labels[j] == 0:
                p = 1.0 / (1.0 + math.exp(-sigma * (scores[i] - scores[j] - margin)))
                total += -math.log(p)
                n += 1
    return total / n


@pytest.mark.parametrize("margin", [0.0, 1.0])
@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_rank_loss_equals_double_loop(margin, sigma):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(17, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, 0, -1, 0, 1, 0, 0, -1, 1, 0, 0, 0, 1, -1, 0, 0, 1])
    got = rank_loss(scores, labels, sigma=sigma, margin=margin, max_pos=None, max_neg=None)
    assert got.item() == pytest.approx(_brute(scores.tolist(), labels.tolist(), sigma, margin))


def test_unknown_labels_are_ignored():
    scores = torch.tensor([2.0, 0.5, -1.0, 0.1])
    labels = torch.tensor([1, 0, 0, 0])
    unknown = torch.tensor([1, 0, 0, -1])
    base = rank_loss(scores[:3], labels[:3], max_pos=None, max_neg=None)
    # changing the score of an unknown patch does not change the loss
    for s in (-50.0, 0.0, 50.0):
        scores2 = scores.clone()
        scores2[3] = s
        got = rank_loss(scores2, unknown, max_pos=None, max_neg=None)
        assert got.item() == pytest.approx(base.item())


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1], [-1, -1, -1], [1, -1, -1]])
def test_no_pair_gives_zero_with_graph(labels):
    scores = torch.randn(3, requires_grad=True)
    loss = rank_loss(scores, torch.tensor(labels))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(scores.grad, torch.zeros(3))


def test_gradient_raises_lesion_relative_to_non_lesion():
    scores = torch.zeros(6, requires_grad=True)
    labels = torch.tensor([1, 1, 0, 0, 0, -1])
    rank_loss(scores, labels).backward()
    g = scores.grad
    assert (g[:2] < 0).all()  # descent increases lesion scores
    assert (g[2:5] > 0).all()  # and decreases non-lesion scores
    assert g[5] == 0
    # one gradient step reduces the loss
    with torch.no_grad():
        stepped = scores - 0.5 * g
    assert rank_loss(stepped, labels) < rank_loss(scores.detach(), labels)


def test_sampling_caps_and_reproducibility():
    n = 300
    labels = torch.zeros(n, dtype=torch.long)
    labels[:100] = 1
    scores = torch.randn(n, requires_grad=True)
    loss = rank_loss(
        scores, labels, max_pos=7, max_neg=11, generator=torch.Generator().manual_seed(3)
    )
    loss.backward()
    touched = scores.grad != 0
    assert int(touched[:100].sum()) == 7
    assert int(touched[100:].sum()) == 11
    again = rank_loss(
        scores, labels, max_pos=7, max_neg=11, generator=torch.Generator().manual_seed(3)
    )
    other = rank_loss(
        scores, labels, max_pos=7, max_neg=11, generator=torch.Generator().manual_seed(4)
    )
    assert again.item() == loss.item()
    assert other.item() != loss.item()


def test_author_code_options():
    scores = torch.tensor([1.0, 0.0, 0.2])
    labels = torch.tensor([1, 0, 0])
    no_margin = rank_loss(scores, labels, margin=0.0, max_pos=None, max_neg=None)
    dropped = rank_loss(scores, labels, margin=1.0, drop_margin=True, max_pos=None, max_neg=None)
    assert dropped.item() == pytest.approx(no_margin.item())
    eq = rank_loss(scores, labels, margin=0.0, include_equal_pairs=True, max_pos=None, max_neg=None)
    # full 3x3 BCE matrix: targets 1/2 on equal-label pairs (and the diagonal)
    s, y = scores, labels.float()
    ref = 0.0
    for i in range(3):
        for j in range(3):
            p = torch.sigmoid(s[i] - s[j])
            t = 1.0 if y[i] > y[j] else (0.5 if y[i] == y[j] else 0.0)
            ref += -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    assert eq.item() == pytest.approx(ref.item() / 9, rel=1e-5)


def test_numerically_stable_for_large_gaps():
    scores = torch.tensor([-500.0, 500.0], requires_grad=True)
    loss = rank_loss(scores, torch.tensor([1, 0]), margin=0.0)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(1000.0)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
