"""Problem 2.1 (the 2-D convolution) and Problem 3.2 (the Dice losses)."""
import numpy as np
import torch
import torch.nn as nn


def _as_float_image_and_kernel(image, kernel):
    image = np.asarray(image)
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.size == 0:
        raise ValueError(f"kernel must be a non-empty 2-D array, got shape {kernel.shape}")
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"image must be a non-empty (H, W) or (H, W, C) array, got shape {image.shape}")
    # Integer images (uint8 above all) would wrap around on multiplication.
    return image.astype(np.float64), kernel


def discrete_2d_convolution(image, kernel):
    """2-D cross-correlation of ``image`` with ``kernel`` (the kernel is *not* flipped).

    With zero padding of ``kh // 2`` rows and ``kw // 2`` columns on every side::

        out[i, j] = sum_{m < kh, n < kw} padded[i + m, j + n] * kernel[m, n]

    Args:
        image: (H, W) array, any real or integer dtype; an (H, W, C) array is
            filtered channel by channel.
        kernel: (kh, kw) array; odd or even, square or not.

    Returns:
        float64 array of the image's shape. For odd kernels this equals
        ``scipy.signal.correlate2d(image, kernel, mode='same', boundary='fill')``.

    Rather than a Python loop over the H*W output pixels, this loops over the
    kh*kw kernel taps and adds one shifted, scaled copy of the whole image per
    tap: the same sum, evaluated by NumPy's vectorised array arithmetic.
    """
    image, kernel = _as_float_image_and_kernel(image, kernel)
    if image.ndim == 3:
        return np.stack([discrete_2d_convolution(image[..., c], kernel) for c in range(image.shape[2])], axis=-1)

    image_height, image_width = image.shape
    kernel_height, kernel_width = kernel.shape
    pad_height, pad_width = kernel_height // 2, kernel_width // 2
    padded = np.pad(image, ((pad_height, pad_height), (pad_width, pad_width)))

    out = np.zeros_like(image)
    scratch = np.empty_like(image)
    for m in range(kernel_height):
        for n in range(kernel_width):
            if kernel[m, n] != 0:
                np.multiply(padded[m:m + image_height, n:n + image_width], kernel[m, n], out=scratch)
                out += scratch
    return out


def discrete_2d_convolution_loop(image, kernel):
    """The same cross-correlation as :func:`discrete_2d_convolution`, computed
    pixel by pixel exactly as the definition reads. Kept as the slow reference
    for the speed study (``convolution.py``); do not use it for real work."""
    image, kernel = _as_float_image_and_kernel(image, kernel)
    if image.ndim == 3:
        return np.stack([discrete_2d_convolution_loop(image[..., c], kernel) for c in range(image.shape[2])], axis=-1)
    kernel_height, kernel_width = kernel.shape
    padded = np.pad(image, ((kernel_height // 2,) * 2, (kernel_width // 2,) * 2))
    out = np.zeros_like(image)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            out[i, j] = np.sum(padded[i:i + kernel_height, j:j + kernel_width] * kernel)
    return out


class DiceLoss(nn.Module):
    r"""Soft Dice loss on logits, per channel over the batch, then averaged.

    For each channel c, with p = sigmoid(logits) and t = targets summed over the
    batch and all spatial positions:

    .. math::
        \text{dice}_c = \frac{2 \sum p t + \text{smooth}}{\sum p + \sum t + \text{smooth}},
        \qquad \text{loss} = 1 - \frac{1}{C} \sum_c \text{dice}_c

    Shapes: ``logits`` is ``[B, C, *spatial]``; ``targets`` holds the same number of
    elements in {0, 1} (or soft labels in [0, 1]) and is reshaped to ``logits``' shape,
    so the template's ``[B, H, W]`` targets work with ``[B, 1, H, W]`` logits.

    Returns a scalar. Same value as ``monai.losses.DiceLoss(sigmoid=True, batch=True,
    smooth_nr=smooth, smooth_dr=smooth)``. Computed in float32, or float64 for float64
    logits (as MONAI returns), so that bf16/fp16 autocast does not round the sums.
    """

    def __init__(self):
        super(DiceLoss, self).__init__()

    def forward(self, logits, targets, smooth=1):
        """
        Compute the Dice Loss between the logits and the targets.
        In this implementation, we use smoothing to avoid division by zero: it is added to both the numerator and the denominator
        """
        if logits.dim() < 2:
            raise ValueError(f"logits must be [B, C, *spatial], got shape {tuple(logits.shape)}")
        dtype = torch.promote_types(logits.dtype, torch.float32)
        inputs = torch.sigmoid(logits.to(dtype))
        targets = targets.reshape(logits.shape).to(dtype)

        reduce_dims = [0, *range(2, logits.dim())]  # everything but the channel
        intersection = (inputs * targets).sum(dim=reduce_dims)
        cardinality = inputs.sum(dim=reduce_dims) + targets.sum(dim=reduce_dims)
        dice = ((2.0 * intersection + smooth) / (cardinality + smooth)).mean()
        return 1. - dice


class BinaryCELoss(nn.Module):
    def __init__(self):
        super(BinaryCELoss, self).__init__()

        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits, targets):
        if targets.shape != logits.shape:
            targets = targets.view(logits.shape)
        return self.bce(logits, targets.to(torch.promote_types(logits.dtype, torch.float32)))


class DiceCELoss(nn.Module):
    r"""The assignment's hybrid objective on logits:

    .. math:: \text{loss} = 0.5\,\text{DiceLoss} + 0.5\,\text{BCE}

    ``DiceLoss`` as above (sigmoid, per channel over batch and space, smooth = 1);
    BCE is the mean binary cross-entropy with logits over every element. Returns a scalar.
    """

    def __init__(self):
        super(DiceCELoss, self).__init__()
        self.diceLoss = DiceLoss()
        # In this case, we use the binary cross entropy loss instead of the cross entropy loss since we have a binary segmentation task.
        self.ceLoss = BinaryCELoss()

    def forward(self, logits, targets):
        return 0.5 * self.diceLoss(logits, targets) + 0.5 * self.ceLoss(logits, targets)
