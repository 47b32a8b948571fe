"""The measures of a vessel segmentation, each under a name that says which it is.

- ``soft_dice(logits, targets)``: ``1 - DiceLoss``, computed on probabilities (no
  threshold), pooled over a whole batch: the differentiable score the loss optimises.
- ``thresholded_dice(pred, target)``: ``2|P & T| / (|P| + |T|)`` on binary masks of one
  image (probability > 0.5, i.e. logit > 0), the Dice that is reported as a result.
- ``pixel_metrics``: accuracy, sensitivity, specificity and ROC AUC over all pixels.
"""
from typing import Sequence

import numpy as np
import torch

from utils import DiceLoss


def soft_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - DiceLoss(logits, targets)`` (smooth 1), pooled over the whole batch: logits and
    targets ``[B, 1, H, W]``, a 0-d tensor (differentiable)."""
    return 1 - DiceLoss()(logits, targets)


def thresholded_dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of two boolean masks of the same shape (one image); 1 when both are empty."""
    intersection = (pred & target).sum().item()
    total = pred.sum().item() + target.sum().item()
    return 1.0 if total == 0 else 2.0 * intersection / total


def pixel_metrics(probs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> dict[str, float]:
    """Accuracy, sensitivity, specificity and ROC AUC over all pixels (vessel where probability > 0.5, as
    ``thresholded_dice``'s masks: logit > 0) of
    lists of probability maps and binary masks, each ``[H, W]`` (sizes may differ between
    images); AUC is NaN when the masks hold a single class."""
    from sklearn.metrics import roc_auc_score  # imported when first needed: it adds a second to every start
    p, t = np.concatenate([x.ravel() for x in probs]), np.concatenate([x.ravel() for x in targets]).astype(bool)
    pred = p > 0.5
    tp, tn = np.sum(pred & t), np.sum(~pred & ~t)
    fp, fn = np.sum(pred & ~t), np.sum(~pred & t)
    return {
        "accuracy": float((tp + tn) / t.size),
        "sensitivity": float(tp / max(tp + fn, 1)),
        "specificity": float(tn / max(tn + fp, 1)),
        "auc": float(roc_auc_score(t, p)) if 0 < t.sum() < t.size else float("nan"),
    }


def constant_prediction_dice(masks: torch.Tensor, sizes: Sequence[tuple[int, int]], vessel: bool) -> float:
    """The mean thresholded Dice of predicting every pixel as vessel (``vessel=True``) or
    as background, over masks ``[N, 1, H, W]`` cropped to their ``sizes``: the floor a
    segmentation must beat. All-background scores 0 on every
    image with vessels; all-vessel scores 2v / (1 + v) for a vessel fraction v."""
    scores = []
    for mask, (h, w) in zip(masks, sizes):
        truth = mask[0, :h, :w].bool()
        scores.append(thresholded_dice(torch.full_like(truth, vessel), truth))
    return float(np.mean(scores))
