"""The course template's Dice pitfall: it compares targets ``y.squeeze()`` of shape
``[B, H, W]`` with predictions ``[B, 1, H, W]``; the product broadcasts to ``[B, B, H, W]``
and adds one image's prediction against another image's vessels, so at batch 2 a perfect
prediction scores above 1. Ours (thresholded, per image, then averaged) gives exactly 1."""
import numpy as np
import pytest
import torch

from medimg.segmentation_metrics import thresholded_dice

# the template's formula as the report measures it: threshold, then 2 sum(pred * y.squeeze()) / (sum pred + sum y)
from report.human_baseline import template_dice as template_broadcast_dice


def ours(logits, y):
    """Thresholded Dice per image (probability > 0.5), then the mean over the batch."""
    pred = torch.sigmoid(logits) > 0.5
    return float(np.mean([thresholded_dice(p[0], t[0].bool()) for p, t in zip(pred, y)]))


def _fundus_vessels(rng, size=256, fraction=0.09):
    """A vessel mask with DRIVE's vessel fraction (about 9% of a 512x512 course image) inside
    a circular field of view, as random smoothed ridges."""
    from scipy import ndimage
    yy, xx = np.mgrid[:size, :size]
    disc = np.hypot(yy - size / 2, xx - size / 2) < size * 0.45
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 4)
    ridges = np.abs(field) < np.quantile(np.abs(field[disc]), fraction / disc.mean())
    return ridges & disc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_perfect_prediction_scores_above_one_with_the_template_at_batch_two(seed):
    rng = np.random.default_rng(seed)
    y = torch.from_numpy(np.stack([_fundus_vessels(rng), _fundus_vessels(rng)])[:, None]).float()  # [2, 1, H, W]
    assert 0.06 < y.mean() < 0.12  # a realistic vessel fraction
    logits = (2 * y - 1) * 10  # perfect: probability above 0.5 exactly on the vessels
    assert ours(logits, y) == 1.0
    broadcast = template_broadcast_dice(logits, y)
    # 1 + (cross overlaps of the two images) / (their vessel pixels): about 1 + the vessel fraction
    a, b = y[0, 0], y[1, 0]
    assert broadcast == pytest.approx(1 + 2 * (a * b).sum().item() / (a.sum() + b.sum()).item(), rel=1e-5)
    assert broadcast > 1.03


def test_at_batch_one_the_two_agree():
    rng = np.random.default_rng(3)
    y = torch.from_numpy(_fundus_vessels(rng)[None, None]).float()
    logits = torch.randn(y.shape) + 2 * y  # an imperfect prediction
    assert template_broadcast_dice(logits, y) == pytest.approx(ours(logits, y), rel=1e-5)
