"""The figures the scripts write: training curves, segmentation predictions,
augmentation examples and the confusion matrix. Every PNG is written atomically."""
import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageSequence

from medimg.retina import STRATEGIES, RetinaTrainSet
from medimg.runfiles import atomic_write
from medimg.segmentation_metrics import thresholded_dice


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    # imported at the first figure, not with this module: it must choose the backend before
    # pyplot loads, and a run or a test that draws nothing never pays its second of import
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path, dpi: int = 110, colours: Optional[int] = None, **savefig_kwargs) -> None:
    """Write a matplotlib figure as PNG, atomically, and free it. ``colours``: reduce it to a
    palette of that many colours (a third of the size for figures of photographs, which
    runs write and the repository keeps)."""
    plt = pyplot()
    if colours:
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=dpi, format="png", **savefig_kwargs)
        with Image.open(buffer) as image:
            palette = image.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
        atomic_write(path, lambda tmp: palette.save(tmp, format="PNG", optimize=True))
    else:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", **savefig_kwargs))
    plt.close(fig)


def plot_panels(panels: Sequence[tuple], path: Path, title: str = "", legend_fontsize: int = 8) -> None:
    """One PNG of side-by-side panels. ``panels``: ``[(ylabel, [(label, epochs, values), ...])]``,
    a curve optionally with a fourth item, the ``ax.plot`` style; the curves of one panel
    must be the same measure on comparable data."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (ylabel, curves) in zip(axes[0], panels):
        for curve, marker in zip(curves, "osd^v" * 8):
            label, epochs, values, style = (*curve, {"marker": marker, "ms": 3})[:4]
            ax.plot(epochs, values, label=label, **style)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_fontsize)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=120, colours=256)  # a palette: a third of the bytes the repository keeps


def plot_curves(history: dict, path: Path, title: str = "", accuracy_label: str = "accuracy",
                valid_epochs: Optional[Sequence[int]] = None) -> None:
    """Loss and accuracy per epoch, train against validation, in one PNG (the classification
    script's: both are measured per epoch on whole samples). ``valid_epochs``: the (1-based)
    epochs at which validation ran, when not every one."""
    epochs = np.arange(1, len(history["train_losses"]) + 1)
    valid_epochs = epochs if valid_epochs is None else valid_epochs
    plot_panels([(label, [("train", epochs, history[f"train_{key}"]),
                          ("validation", valid_epochs, history[f"valid_{key}"])])
                 for key, label in (("losses", "loss"), ("accs", accuracy_label))], path, title)


def error_image(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB of a boolean prediction against the truth: green vessel found, red false
    positive, blue missed vessel, black background."""
    rgb = np.zeros((*truth.shape, 3))
    rgb[prediction & truth] = (0.1, 0.8, 0.1)
    rgb[prediction & ~truth] = (0.9, 0.1, 0.1)
    rgb[~prediction & truth] = (0.2, 0.4, 1.0)
    return rgb


def save_predictions_figure(path: Path, images: torch.Tensor, masks: torch.Tensor, logits: torch.Tensor,
                            sizes: Sequence[tuple[int, int]], names: Sequence[str], count: int = 3) -> None:
    """Image, ground truth and prediction side by side; errors coloured
    (green: vessel found, red: false positive, blue: missed vessel)."""
    plt = pyplot()

    count = min(count, len(images))
    fig, axes = plt.subplots(count, 3, figsize=(10, 3.4 * count), squeeze=False)
    for row, i in enumerate(range(count)):
        h, w = sizes[i]
        image = images[i, :, :h, :w].permute(1, 2, 0).numpy()
        truth = masks[i, 0, :h, :w].numpy().astype(bool)
        pred = (logits[i, 0, :h, :w] > 0).numpy()
        errors = error_image(pred, truth)
        dice = thresholded_dice(torch.from_numpy(pred), torch.from_numpy(truth))
        for ax, img, title in zip(axes[row], (image, truth, errors),
                                  (names[i], "ground truth", f"prediction (Dice {dice:.3f})")):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            ax.set_title(title)
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=90, colours=256)


def save_mask_png(path: Path, mask: np.ndarray) -> None:
    """A boolean ``[H, W]`` mask as a 1-bit PNG (a few kB): what the report needs to draw
    runs' predictions side by side without their checkpoints."""
    atomic_write(path, lambda tmp: Image.fromarray(np.asarray(mask, dtype=bool)).save(tmp, format="PNG", optimize=True))


def save_mask_pages(path: Path, masks: Sequence[np.ndarray]) -> None:
    """Binary masks as the pages of one 1-bit TIFF (CCITT group 4: a few kB a page)."""
    pages = [Image.fromarray(np.asarray(m, dtype=bool)) for m in masks]
    atomic_write(path, lambda tmp: pages[0].save(tmp, format="TIFF", compression="group4", save_all=True,
                                                  append_images=pages[1:]))


def load_mask_pages(path: Path) -> list[np.ndarray]:
    """The masks of ``save_mask_pages``, boolean, in order."""
    with Image.open(path) as image:
        return [np.array(page.convert("1"), dtype=bool) for page in ImageSequence.Iterator(image)]


def load_mask_png(path: Path) -> np.ndarray:
    """A mask that ``save_mask_png`` wrote, as a boolean ``[H, W]`` array."""
    with Image.open(path) as image:
        return np.array(image.convert("1"), dtype=bool)


def vessel_window(mask: torch.Tensor, size: int) -> tuple[tuple[int, int], int]:
    """The top-left corner of the ``size``-pixel square of ``mask [1, H, W]`` with the most
    vessel pixels, on a coarse grid: a crop with thick and thin vessels to zoom on."""
    height, width = mask.shape[-2:]
    size = min(size, height, width)
    corners = [(t, l) for t in range(0, height - size + 1, max(1, size // 4))
               for l in range(0, width - size + 1, max(1, size // 4))]
    return max(corners, key=lambda c: int(mask[..., c[0]:c[0] + size, c[1]:c[1] + size].sum())), size


def save_augmentations_figure(path: Path, image: torch.Tensor, mask: torch.Tensor, count: int, seed: int,
                              window: int = 128) -> None:
    """Each strategy of ``retina.STRATEGIES`` (a row) applied ``count`` times (columns) to one
    ``window``-pixel patch of a training image, shown at full resolution (one image pixel is
    several printed pixels, so a resampling or a displaced vessel shows). The first column is
    the untouched patch. As in training, each transform sees the whole image (its sizes are
    fractions of the image's side); the patch shown is the square with the most vessel."""
    plt = pyplot()
    (top, left), size = vessel_window(mask, window)
    patch = (..., slice(top, top + size), slice(left, left + size))
    fig, axes = plt.subplots(len(STRATEGIES), count + 1, figsize=(2.3 * (count + 1), 2.45 * len(STRATEGIES)),
                             squeeze=False)
    with torch.random.fork_rng():  # leave the training's random stream untouched
        torch.manual_seed(seed)
        for row, name in enumerate(STRATEGIES):
            dataset = RetinaTrainSet(image[None], mask[None], augmentation=name)
            samples = [(image.float() / 255, mask.float())] + [dataset[0] for _ in range(count)]
            for col, (x, y) in enumerate(samples):
                x = x[patch]
                ax = axes[row, col]
                ax.imshow(x.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(name, fontsize=11)
                    ax.set_title("original" if row == 0 else "", fontsize=9)
    fig.suptitle(f"Each strategy on one {size}x{size} training patch at full resolution", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100, colours=256)


def confusion_figure(matrix: Sequence[Sequence[int]], path: Path, title: str, class_names: Sequence[str]) -> None:
    """The confusion matrix (rows: true class) as counts over a colour scale of each row's fractions."""
    plt = pyplot()
    n, names = len(class_names), class_names
    m = np.asarray(matrix, dtype=float)
    rates = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
