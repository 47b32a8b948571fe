"""The report's figures, each drawn from the runs' logs. Curves side by side are the
same measure; a diverged run is drawn on a clipped axis with its real value written
beside it, so the other runs stay readable."""
import numpy as np

from medimg import registry
from medimg.figures import error_image, pyplot, save_figure, vessel_window
from report.logs import CONVOLUTION_METHODS, copy_names, done, evaluated_on, steps_per_epoch

LOSS_CLIP = 1.2  # DiceCE of a constant prediction is about 0.7-0.9; above this a run has diverged
WIDTH = 7.2  # inches: a full-width figure printed at the page's 17 cm keeps 9-pt text at about 8 pt

import matplotlib

matplotlib.rcParams.update({"font.size": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
                            "legend.fontsize": 8, "axes.titlesize": 9})


def save(fig, path):
    save_figure(fig, path, dpi=150, bbox_inches="tight")


def _label(name, labels=None):
    """What a legend or title calls a run: ``labels[name]`` where given, else its configuration's
    label, from ``labels`` or the registry (a ``NAME_seedS`` copy: NAME's, with ", seed S"), looked up
    among the ``gpu`` profile's runs, then the ``cpu`` profile's (the recipe runs exist only
    at the assignment's scale)."""
    base, _, seed = name.partition("_seed")
    if (labels or {}).get(name) or (labels or {}).get(base):
        return labels.get(name) or labels[base] + (f", seed {seed}" if seed else "")
    run = registry.runs("gpu").get(base) or registry.runs("cpu").get(base)
    return ((run.label if run else None) or base) + (f", seed {seed}" if seed else "")


def curves(runs, names, path, labels=None, human=None, ncol=None, soft=False, test_loss=False):
    """Thresholded Dice of each evaluation, with ``soft`` the soft Dice beside it (it still
    separates runs whose thresholded Dice is 0), and the loss: the training loss per epoch,
    clipped at ``LOSS_CLIP`` with diverged values written on the plot, or with ``test_loss``
    the loss on the test images at each evaluation, where the runs' training data differ
    (augmented, or fewer eyes) and their training losses are not comparable. One colour and
    marker per configuration: with several seeds (its run and its ``NAME_seedS`` copies) each
    seed a thin faint line and their mean over it with markers. ``human``: the second observer's Dice under the
    same protocol, a black dotted line drawn over the curves. Where the configurations' epochs differ in length
    (trained on fewer eyes: more, shorter epochs), the x axis counts training steps instead of epochs. The legend
    sits below the panels. No figure when none of ``names`` is finished."""
    if not any(copy_names(runs, name) for name in names):
        return
    on = evaluated_on([runs[k] for name in names for k in copy_names(runs, name)])
    # configurations whose epochs differ in length (fewer eyes: more, shorter epochs) share an axis of steps;
    # older runs that lack their image count are read as one step an epoch (so drawn by epoch)
    per_epoch = {k: steps_per_epoch(runs[k]) if "n_train_images" in runs[k] else 1
                 for name in names for k in copy_names(runs, name)}
    by_steps = len(set(per_epoch.values())) > 1
    scale = per_epoch if by_steps else dict.fromkeys(per_epoch, 1)
    x_label = "training step" if by_steps else "epoch"
    plt = pyplot()
    fig, axes = plt.subplots(1, 3 if soft else 2, figsize=(WIDTH, 2.5 if soft else 2.7))
    ax_dice, ax_loss = axes[0], axes[-1]
    handles, clipped, highest = [], [], 0.0
    drawn = 0
    for name, marker in zip(names, "osd^vxP*" * 2):
        keys = copy_names(runs, name)
        if not keys:
            continue
        colour, drawn = f"C{drawn % 10}", drawn + 1
        # several seeds evaluated alike: each seed thin and faint, their mean over it with markers
        several = len(keys) > 1 and all(
            runs[k]["evaluated_epochs"] == runs[keys[0]]["evaluated_epochs"] and
            len(runs[k]["train_losses"]) == len(runs[keys[0]]["train_losses"]) for k in keys)
        seed_style = dict(color=colour, lw=0.7, alpha=0.45) if several else dict(color=colour, lw=1.2)
        curves_of_seeds = []
        for k, key in enumerate(keys):
            r = runs[key]
            ev = np.array(r["evaluated_epochs"]) * scale[key]
            if test_loss:
                loss, epochs = np.array(r["valid_losses"]), ev
            else:
                loss = np.array(r["train_losses"])
                epochs = np.arange(1, len(loss) + 1) * scale[key]
            panels = [(ax_dice, ev, np.array(r["valid_dice_thresholded"]))] + \
                ([(axes[1], ev, np.array(r["valid_accs"]))] if soft else []) + \
                [(ax_loss, epochs, np.minimum(loss, LOSS_CLIP))]
            for ax, x, y in panels:
                ax.plot(x, y, **seed_style, **({} if several or ax is ax_loss else dict(marker=marker, ms=2.5)))
            curves_of_seeds.append(panels)
            finite = loss[np.isfinite(loss)]
            highest = max(highest, min(float(finite.max()), LOSS_CLIP) if finite.size else 0.0)
            if k == 0 and loss.max() > LOSS_CLIP:  # one note per clipped run, inside the axes
                above = loss[loss > LOSS_CLIP]
                clipped.append((f"{_label(name, labels)}: {above.min():.0e} to {above.max():.0e}"
                                if len(above) > 1 else f"{_label(name, labels)}: {above.max():.0e}", colour))
        if several:  # the configuration's mean over its seeds, epoch by epoch
            for i, (ax, x, _) in enumerate(curves_of_seeds[0]):
                ax.plot(x, np.mean([c[i][2] for c in curves_of_seeds], axis=0), color=colour, lw=1.4,
                        **({} if ax is ax_loss else dict(marker=marker, ms=2.5)))
        handles.append((plt.Line2D([], [], color=colour, marker=marker, ms=3), _label(name, labels)))
    if clipped:
        ax_loss.text(0.97, 0.93, "drawn at 1.2, losses:", transform=ax_loss.transAxes, ha="right", va="top",
                     fontsize=7.5)
        for i, (text, colour) in enumerate(clipped):
            ax_loss.text(0.97, 0.86 - 0.07 * i, text, transform=ax_loss.transAxes, ha="right", va="top",
                         fontsize=7.5, color=colour)
    if human is not None and on == "test" and all(
            runs[k]["config"].get("image_size", 0) in (0, 512) for name in names for k in copy_names(runs, name)):
        # measured on the 512-px test masks only; drawn over the curves, which may run along it
        ax_dice.axhline(human, color="black", ls=":", lw=1.2, zorder=10)
        handles.append((plt.Line2D([], [], color="black", ls=":", lw=1.2), "second human observer"))
    ax_dice.set(ylabel=f"{on} Dice (threshold 0.5)", ylim=(0, 0.9), xlabel=x_label)
    if soft:
        axes[1].set(ylabel=f"{on} soft Dice", ylim=(0, 0.9), xlabel=x_label)
    # the losses' own range, or room above the clip line for the notes of the runs drawn at it
    ax_loss.set(ylabel=f"{on if test_loss else 'training'} DiceCE loss", xlabel=x_label,
                ylim=(0, LOSS_CLIP * 1.6 if clipped else (highest or LOSS_CLIP) * 1.1))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.legend(*zip(*handles), loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False,
               ncol=ncol or min(3, len(handles)))
    save(fig, path)


def sweep(runs, names, path, titles):
    """Small multiples, one column per configuration (``titles[name]`` above it) and its seeds
    in it: thresholded and soft test Dice on one scale (top), training loss on each column's
    own scale, logarithmic where it spans more than a factor of 20 (bottom), so that runs stuck at a thresholded Dice of 0 neither hide each
    other nor the others, and a loss that explodes leaves the stable ones readable."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(names), figsize=(WIDTH, 3.6), sharex=True, squeeze=False)
    for col, name in enumerate(names):
        ax_dice, ax_loss = axes[:, col]
        losses = []
        for k, key in enumerate(copy_names(runs, name)):
            r = runs[key]
            ls = ("-", "--", ":")[min(k, 2)]
            ev = r["evaluated_epochs"]
            # the thresholded Dice over the soft one: where the outputs saturate the two coincide
            ax_dice.plot(ev, r["valid_accs"], color="C1", ls=ls, lw=1.1)
            ax_dice.plot(ev, r["valid_dice_thresholded"], color="C0", ls=ls, lw=1.1)
            ax_loss.plot(np.arange(1, len(r["train_losses"]) + 1), r["train_losses"], color="C2", ls=ls, lw=1.1)
            losses.extend(r["train_losses"])
        ax_dice.set_title(titles[name])
        ax_dice.set(ylim=(-0.02, 0.9))
        if col:  # one Dice scale for the row; each loss its own log scale (an explosion would flatten the rest)
            ax_dice.tick_params(labelleft=False)
        ax_loss.set(xlabel="epoch", yscale="log" if max(losses) > 20 * min(losses) else "linear")
        for ax in (ax_dice, ax_loss):
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{evaluated_on([runs[k] for name in names for k in copy_names(runs, name)])} Dice")
    axes[1, 0].set_ylabel("training loss")
    fig.tight_layout()
    handles = [plt.Line2D([], [], color="C0"), plt.Line2D([], [], color="C1"), plt.Line2D([], [], color="C2"),
               plt.Line2D([], [], color="grey", ls="-"), plt.Line2D([], [], color="grey", ls="--"),
               plt.Line2D([], [], color="grey", ls=":")]
    seeds = [runs[k]["config"]["seed"] for k in copy_names(runs, names[0])]
    fig.legend(handles, ["thresholded Dice", "soft Dice", "training DiceCE loss",
                         *[f"seed {s}" for s in seeds]][:3 + len(seeds)],
               loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False, ncol=6)
    save(fig, path)


def generalisation(run, path):
    """Thresholded Dice and loss of the same network on whole training eyes and on the images it
    was evaluated on (the test images, or its held-out eyes), in eval mode."""
    plt = pyplot()
    ev = run["evaluated_epochs"]
    fig, (ax_dice, ax_loss) = plt.subplots(1, 2, figsize=(WIDTH, 2.6))
    for ax, (train_key, test_key, label) in zip(
            (ax_dice, ax_loss), (("train_whole_dice_thresholded", "valid_dice_thresholded", "Dice (threshold 0.5)"),
                                 ("train_whole_losses", "valid_losses", "DiceCE loss"))):
        ax.plot(ev, run[train_key], "o-", ms=3, label="training eyes (one copy each)")
        ax.plot(ev, run[test_key], "s-", ms=3,
                label="held-out eyes" if evaluated_on([run]) == "held-out" else "test images")
        ax.set(xlabel="epoch", ylabel=label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.legend(*ax_dice.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               frameon=False, ncol=2)
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
    runs drawn and the image's name. A run without the masks is left out, and so is one whose
    truth is not the first drawn run's (another test image, or the image at another size):
    one ground truth heads the panel and every Dice is against it."""
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
        if not found:
            continue
        image = found[0].name[len("example_"):-len("_prediction.png")]
        own_truth = load_mask_png(folder / f"example_{image}_truth.png")
        if truth is None:
            truth, image_name = own_truth, image
        elif image != image_name or not np.array_equal(own_truth, truth):
            continue
        drawn.append((name, load_mask_png(found[0])))
    if not drawn:
        return [], None
    top, left = thin_vessel_window(truth, size)
    crop = (slice(top, top + size), slice(left, left + size))
    import textwrap
    # drawn at the size it is printed (problem4.typ's panel: a quarter of the text width a
    # column, at most the whole), so its 8-pt titles print at about 8 pt however many columns;
    # a title is wrapped to its column (an 8-pt character is up to about 5.5 pt wide), its seed
    # on a line of its own (a run with finished seed copies is named with its seed, as they are)
    width = min(1.0, 0.25 * (len(drawn) + 1)) * WIDTH
    side = width / (len(drawn) + 1)

    def heading(name):
        base, _, seed = name.partition("_seed")
        if not seed and len(copy_names(runs, name)) > 1:
            seed = runs[name]["config"]["seed"]
        return textwrap.fill(_label(base, labels), max(10, int(side * 72 / 5.5))) + (f"\nseed {seed}" if seed else "")
    columns = [("ground truth", np.stack([truth] * 3, -1).astype(float))] + [
        (f"{heading(n)}\nDice {thresholded_dice(torch.from_numpy(p), torch.from_numpy(truth)):.3f}",
         error_image(p, truth)) for n, p in drawn]
    fig, axes = plt.subplots(2, len(columns), figsize=(width, 2 * side + 0.8), squeeze=False)
    for col, (title, rgb) in enumerate(columns):
        axes[0, col].imshow(rgb, interpolation="antialiased")
        axes[0, col].add_patch(plt.Rectangle((left, top), size, size, fill=False, ec="yellow", lw=1))
        axes[0, col].set_title(title, fontsize=8)
        axes[1, col].imshow(rgb[crop], interpolation="nearest")
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel(f"the yellow\n{size}×{size} px", fontsize=8)
    fig.tight_layout()
    save(fig, path)
    return [n for n, _ in drawn], image_name


def method_label(method):
    """A convolution method as the figure's legend names it (``logs.CONVOLUTION_METHODS``)."""
    return " ".join(filter(None, CONVOLUTION_METHODS[method])) if method in CONVOLUTION_METHODS else method


def convolution_speed(records, path, dpi=150):
    """Seconds per 2-D cross-correlation against image size, one line per method, one panel
    per kernel size measured (log-log)."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    from medimg.convolution import METHODS
    plt = pyplot()
    kernels = sorted({r["kernel_size"] for r in records})
    sides = sorted({r["image_size"] for r in records})
    fig, axes = plt.subplots(1, len(kernels), figsize=(WIDTH, 2.4), sharex=True, sharey=True, squeeze=False)
    for ax, k in zip(axes.flat, kernels):
        for i, (method, marker) in enumerate(zip(METHODS, "osd^v")):
            rows = [r for r in records if r["method"] == method and r["kernel_size"] == k and r.get("seconds")]
            if rows:  # alternate solid and dashed, hollow markers: lines that coincide stay visible
                ax.loglog([r["image_size"] for r in rows], [r["seconds"] for r in rows], marker=marker, ms=4,
                          mfc="none", ls="-" if i % 2 == 0 else "--", label=method_label(method))
        ax.set(title=f"{k}×{k} kernel", xlabel="image side (pixels)")
        # the sides measured as ticks, in plain numbers (log ticks would read 10² and 10³)
        ax.xaxis.set_major_locator(FixedLocator(sides))
        ax.xaxis.set_major_formatter(FixedFormatter([str(s) for s in sides]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("seconds per call")
    fig.tight_layout()
    legend = fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                        frameon=False, ncol=3)
    for text in legend.get_texts():
        if text.get_text() in map(method_label, CONVOLUTION_METHODS):
            text.set_fontfamily("monospace")
    save_figure(fig, path, dpi=dpi, bbox_inches="tight")


BLUR_WIDTH = 0.8 * WIDTH  # printed at 80% of the text width (report.typ), so its text keeps the size of the others'


def detail_window(image, size=96):
    """The top-left corner of the ``size``-pixel square of ``image`` with the most fine detail
    (the largest sum of squared differences between neighbouring pixels), on a coarse grid."""
    energy = np.zeros_like(image, dtype=float)
    energy[:, 1:] += np.diff(image.astype(float), axis=1) ** 2
    energy[1:, :] += np.diff(image.astype(float), axis=0) ** 2
    height, width = image.shape
    size = min(size, height, width)
    step = max(1, size // 4)
    corners = [(t, l) for t in range(0, height - size + 1, step) for l in range(0, width - size + 1, step)]
    return max(corners, key=lambda c: energy[c[0]:c[0] + size, c[1]:c[1] + size].sum())


def blur(image, path, zoom=96) -> int:
    """The photograph and its 7x7 box and Gaussian (sigma 2) blurs above, the square of ``zoom``
    pixels with the most fine detail enlarged below them (outlined in yellow above), and the
    magnitude spectrum of each at the bottom: frequency axes in cycles per pixel with zero at
    the centre, one colour scale. Returns the square's side, for the caption."""
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MultipleLocator

    from medimg.convolution import box_kernel, discrete_2d_convolution, gaussian_kernel
    plt = pyplot()
    gauss = gaussian_kernel(2.0)
    blurred, boxed = discrete_2d_convolution(image, gauss), discrete_2d_convolution(image, box_kernel(7))
    spectrum = lambda img: np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))))
    height, width = image.shape
    zoom = min(zoom, height, width)
    top, left = detail_window(image, zoom)
    fy, fx = (np.fft.fftshift(np.fft.fftfreq(n)) for n in (height, width))
    # the pixels' edges, so that each frequency sits at its pixel's centre
    extent = (fx[0] - 0.5 / width, fx[-1] + 0.5 / width, fy[0] - 0.5 / height, fy[-1] + 0.5 / height)
    fig, axes = plt.subplots(3, 3, figsize=(BLUR_WIDTH, 5.9), layout="constrained",
                             gridspec_kw={"height_ratios": [height / width, 1, 1]})
    columns = [(image, "original"), (boxed, "7×7 box"), (blurred, f"Gaussian, σ = 2 ({len(gauss)}×{len(gauss)})")]
    vmax = spectrum(image).max()
    ticks, names = [-0.4, -0.2, 0, 0.2, 0.4], ["−0.4", "", "0", "", "0.4"]
    for (photo, detail, spec), (img, title) in zip(axes.T, columns):
        photo.imshow(img, cmap="gray", vmin=0, vmax=255)
        photo.add_patch(Rectangle((left - 0.5, top - 0.5), zoom, zoom, fill=False, edgecolor="yellow", lw=0.8))
        photo.set_title(title, fontsize=8)
        photo.axis("off")
        detail.imshow(img[top:top + zoom, left:left + zoom], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        detail.set_title(f"the yellow {zoom}×{zoom} px, enlarged" if photo is axes[0, 0] else "", fontsize=7)
        detail.axis("off")
        shown = spec.imshow(spectrum(img), cmap="magma", vmin=0, vmax=vmax, origin="lower", extent=extent)
        spec.set_xticks(ticks, names, fontsize=8)
        spec.set_yticks(ticks, names if spec is axes[2, 0] else [], fontsize=8)
        spec.set_xlabel("$f_x$ (cycles/pixel)", fontsize=8, labelpad=1)
        spec.tick_params(length=2.5, pad=1.5)
    axes[2, 0].set_ylabel("$f_y$ (cycles/pixel)", fontsize=8, labelpad=1)
    bar = fig.colorbar(shown, ax=axes[2, :], fraction=0.04, pad=0.02, aspect=15)
    bar.set_label("log(1 + |spectrum|)", fontsize=8)
    bar.ax.tick_params(labelsize=8, length=2.5)
    bar.locator = MultipleLocator(5)
    bar.update_ticks()
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.03, hspace=0.03)
    save(fig, path)
    return zoom


# Sobel responses: signed, zero on black so that the edges, a few per cent of the pixels, stand
# out in print; red for positive, blue for negative, brighter the stronger
EDGE_COLOURS = ["#7fd4ff", "#0a6cff", "black", "#ff2a1a", "#ffb37f"]
EDGE_SATURATION = 97  # percentile of |response| drawn at full colour: the edges, not the flat areas, set the scale


def edges(image, path, zoom=96) -> int:
    """Sobel responses (red positive, blue negative, black zero) and the gradient magnitude, above;
    below, the square of ``zoom`` pixels with the most fine detail (outlined in yellow above) of
    each, enlarged, where the edges the text points to can be seen at print size. Returns the
    square's side (``zoom``, or the image's shorter side if smaller), for the caption."""
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.patches import Rectangle

    from medimg.convolution import SOBEL_HORIZONTAL_EDGES, SOBEL_VERTICAL_EDGES, discrete_2d_convolution
    plt = pyplot()
    horizontal = discrete_2d_convolution(image, SOBEL_HORIZONTAL_EDGES)
    vertical = discrete_2d_convolution(image, SOBEL_VERTICAL_EDGES)
    magnitude = np.hypot(horizontal, vertical)
    limit = np.percentile(np.abs(np.concatenate([horizontal, vertical])), EDGE_SATURATION)
    signed = LinearSegmentedColormap.from_list("signed_edges", EDGE_COLOURS)
    zoom = min(zoom, *image.shape[:2])
    top, left = detail_window(image, zoom)
    panels = [(image, dict(cmap="gray"), "original", None),
              (horizontal, dict(cmap=signed, vmin=-limit, vmax=limit), "horizontal edges", SOBEL_HORIZONTAL_EDGES),
              (vertical, dict(cmap=signed, vmin=-limit, vmax=limit), "vertical edges", SOBEL_VERTICAL_EDGES),
              (magnitude, dict(cmap="gray", vmin=0, vmax=np.percentile(magnitude, EDGE_SATURATION)),
               "gradient magnitude", None)]
    fig, axes = plt.subplots(2, 4, figsize=(WIDTH, 4.1),
                             gridspec_kw={"height_ratios": [image.shape[0] / image.shape[1], 1]})
    for (whole, detail), (shown, style, title, kernel) in zip(axes.T, panels):
        whole.imshow(shown, **style)
        whole.add_patch(Rectangle((left - 0.5, top - 0.5), zoom, zoom, fill=False, edgecolor="yellow", lw=0.8))
        whole.set_title(title, fontsize=8)
        detail.imshow(shown[top:top + zoom, left:left + zoom], interpolation="nearest", **style)
        if kernel is not None:
            # the kernel printed under its enlarged panel, not over the response the text points to
            text = "\n".join(" ".join(f"{v:+.0f}" for v in row) for row in kernel)
            detail.text(0.5, -0.03, text, transform=detail.transAxes, ha="center", va="top", family="monospace",
                        fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout(w_pad=0.3, h_pad=0.4)
    save(fig, path)
    return zoom
