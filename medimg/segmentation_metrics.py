"""The measures of a vessel segmentation, each under a name that says which it is.

- ``soft_dice(logits, targets)``: ``1 - DiceLoss``, computed on probabilities (no
  threshold), pooled over a whole batch: the differentiable score the loss optimises.
- ``thresholded_dice(pred, target)``: ``2|P & T| / (|P| + |T|)`` on binary masks of one
  image (probability >= 0.5), the Dice that is reported as a result.
- ``pixel_metrics``: accuracy, sensitivity, specificity and ROC AUC over all pixels.
"""
import numpy as np
import torch

from utils import DiceLoss


def soft_dice(logits, targets):
    """``1 - DiceLoss(logits, targets)`` (smooth 1) over the whole batch ``[B, 1, H, W]``."""
    return 1 - DiceLoss()(logits, targets)


def thresholded_dice(pred, target):
    """Dice of two boolean masks of one image; 1 when both are empty."""
    intersection = (pred & target).sum().item()
    total = pred.sum().item() + target.sum().item()
    return 1.0 if total == 0 else 2.0 * intersection / total


def pixel_metrics(probs, targets):
    """Accuracy, sensitivity, specificity and ROC AUC over all pixels (threshold 0.5) of
    lists of probability maps and binary masks."""
    from sklearn.metrics import roc_auc_score
    p, t = np.concatenate([x.ravel() for x in probs]), np.concatenate([x.ravel() for x in targets]).astype(bool)
    pred = p >= 0.5
    tp, tn = np.sum(pred & t), np.sum(~pred & ~t)
    fp, fn = np.sum(pred & ~t), np.sum(~pred & t)
    return {
        "accuracy": float((tp + tn) / t.size),
        "sensitivity": float(tp / max(tp + fn, 1)),
        "specificity": float(tn / max(tn + fp, 1)),
        "auc": float(roc_auc_score(t, p)) if 0 < t.sum() < t.size else float("nan"),
    }


def constant_prediction_dice(masks, sizes, vessel):
    """The mean thresholded Dice of predicting every pixel as vessel (``vessel=True``) or
    as background: the floor a segmentation must beat. All-background scores 0 on every
    image with vessels; all-vessel scores 2v / (1 + v) for a vessel fraction v."""
    scores = []
    for mask, (h, w) in zip(masks, sizes):
        truth = mask[0, :h, :w].bool()
        scores.append(thresholded_dice(torch.full_like(truth, vessel), truth))
    return float(np.mean(scores))
