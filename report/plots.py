"""The report's figures, each drawn from the runs' logs. Curves side by side are the
same measure; a diverged run is drawn on a clipped axis with its real value written
beside it, so the other runs stay readable."""
import numpy as np

from medimg import registry
from medimg.figures import error_image, pyplot, save_figure, vessel_window
from report.logs import HUMAN_DICE, done

LOSS_CLIP = 1.2  # DiceCE of a constant prediction is about 0.7-0.9; above this a run has diverged


def save(fig, path):
    save_figure(fig, path, dpi=150, bbox_inches="tight")


def curves(runs, names, path, up_to=None, labels=None):
    """Thresholded Dice of each evaluation, and the training loss per epoch (clipped at
    ``LOSS_CLIP``, diverged values written on the plot), one colour per run."""
    plt = pyplot()
    known = registry.runs()
    fig, (ax_dice, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, style in zip(names, ["o-", "s-", "d-", "^-", "v-", "x-"] * 2):
        r = runs[name]
        if not done(r):
            continue
        label = (labels or {}).get(name) or known[name].label or name
        ev, d = np.array(r["evaluated_epochs"]), np.array(r["valid_dice_thresholded"])
        keep = ev <= (up_to or ev.max())
        line, = ax_dice.plot(ev[keep], d[keep], style, ms=3, label=label)
        loss = np.array(r["train_losses"])[:up_to]
        epochs = np.arange(1, len(loss) + 1)
        ax_loss.plot(epochs, np.minimum(loss, LOSS_CLIP), style, ms=3, color=line.get_color(), label=label)
        for e, value in zip(epochs, loss):
            if value > LOSS_CLIP:
                ax_loss.annotate(f"{value:.0e}", (e, LOSS_CLIP), textcoords="offset points", xytext=(0, 3),
                                 ha="center", fontsize=6, color=line.get_color())
    ax_dice.axhline(HUMAN_DICE, color="grey", ls=":", lw=1)
    ax_dice.text(0.02, HUMAN_DICE + 0.01, "2nd human observer (external)", color="grey", fontsize=7,
                 transform=ax_dice.get_yaxis_transform())
    ax_dice.set(ylabel="test Dice (threshold 0.5)", ylim=(0, 0.9), xlabel="epoch")
    ax_loss.set(ylabel=f"training DiceCE loss (clipped at {LOSS_CLIP})", ylim=(0, LOSS_CLIP * 1.12), xlabel="epoch")
    for ax in (ax_dice, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def gradient_norms(runs, path):
    """Per-block gradient norm at initialisation, with and without skip connections."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    measured = [name for name in ("unet", "unet_noskip") if runs[name].get("initial_gradient_norms")]
    width = 0.8 / len(measured)
    for i, name in enumerate(measured):
        norms = runs[name]["initial_gradient_norms"]
        blocks, offset = list(norms), (i - (len(measured) - 1) / 2) * width
        ax.bar(np.arange(len(blocks)) + offset, list(norms.values()), width=width,
               label=registry.runs()[name].label)
    ax.set_xticks(range(len(blocks)), [b.replace("_block", " ") for b in blocks], rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("gradient norm at initialisation")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def generalisation(run, path):
    """Soft Dice and loss of the same network on whole training and test images, eval mode."""
    plt = pyplot()
    ev = run["evaluated_epochs"]
    fig, (ax_dice, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, (train_key, test_key, label) in zip(
            (ax_dice, ax_loss), (("train_whole_soft_dice", "valid_accs", "soft Dice"),
                                 ("train_whole_losses", "valid_losses", "DiceCE loss"))):
        ax.plot(ev, run[train_key], "o-", ms=3, label="training eyes (one copy each)")
        ax.plot(ev, run[test_key], "s-", ms=3, label="test images")
        ax.set(xlabel="epoch", ylabel=f"{label}, whole images, eval mode")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def classification(runs, names, path):
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in names:
        r = runs[name]
        if not done(r):
            continue
        epochs = np.arange(1, len(r["train_losses"]) + 1)
        for ax, key in ((ax_loss, "losses"), (ax_acc, "accs")):
            line, = ax.plot(epochs, r[f"train_{key}"], "-", label=f"{name} train")
            ax.plot(epochs, r[f"valid_{key}"], "--", color=line.get_color(), label=f"{name} validation")
    for ax, label in ((ax_loss, "cross-entropy"), (ax_acc, "accuracy")):
        ax.set(xlabel="epoch", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def thin_vessel_window(truth, size=96):
    """The top-left corner of the ``size``-pixel square of the boolean mask ``truth`` with
    the most thin-vessel pixels (those a 3x3 opening removes: one or two pixels wide)."""
    from scipy import ndimage
    thin = truth & ~ndimage.binary_opening(truth, structure=np.ones((3, 3), bool))
    return vessel_window(thin, size)[0]


def prediction_panels(runs, names, path, labels=None, size=96):
    """The thresholded predictions of several runs on the same test image side by side, the
    whole image above and a zoomed crop of thin vessels below, errors coloured as in
    ``error_image``. Reads the ``example_*`` masks the runs wrote; returns the names of the
    runs drawn (those without the masks are left out) and the image's name."""
    from pathlib import Path

    import torch

    from medimg.figures import load_mask_png
    from medimg.segmentation_metrics import thresholded_dice
    plt = pyplot()
    drawn, truth, image_name = [], None, None
    for name in names:
        r = runs.get(name, {})
        folder = Path(r.get("folder", "/nonexistent"))
        found = sorted(folder.glob("example_*_prediction.png")) if done(r) else []
        if found:
            image_name = found[0].name[len("example_"):-len("_prediction.png")]
            drawn.append((name, load_mask_png(found[0])))
            truth = load_mask_png(folder / f"example_{image_name}_truth.png")
    if not drawn:
        return [], None
    top, left = thin_vessel_window(truth, size)
    crop = (slice(top, top + size), slice(left, left + size))
    import textwrap
    label = lambda n: textwrap.fill((labels or {}).get(n) or registry.runs()[n.split("_seed")[0]].label
                                    + (f", seed {n.split('_seed')[1]}" if "_seed" in n else ""), 26)
    columns = [("ground truth", np.stack([truth] * 3, -1).astype(float))] + [
        (f"{label(n)}\n"
         f"Dice on this image {thresholded_dice(torch.from_numpy(p), torch.from_numpy(truth)):.3f}",
         error_image(p, truth)) for n, p in drawn]
    fig, axes = plt.subplots(2, len(columns), figsize=(2.25 * len(columns), 4.9), squeeze=False)
    for col, (title, rgb) in enumerate(columns):
        axes[0, col].imshow(rgb, interpolation="antialiased")
        axes[0, col].add_patch(plt.Rectangle((left, top), size, size, fill=False, ec="yellow", lw=1))
        axes[0, col].set_title(title, fontsize=7)
        axes[1, col].imshow(rgb[crop], interpolation="nearest")
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel(f"the yellow {size}x{size}-px square", fontsize=7)
    fig.tight_layout()
    save(fig, path)
    return [n for n, _ in drawn], image_name
