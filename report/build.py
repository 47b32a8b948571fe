"""
Build the report from the runs' logs:

    python report/build.py --runs runs/cpu            # -> report/report.pdf

Reads every ``results.json``, ``not_run.json`` and ``convolution_timings.json`` under
RUNS, regenerates the figures into ``report/figures/``, writes every number the text
uses into ``report/generated/numbers.json`` (the Typst source reads them from there:
no number is typed into the text), checks each claim the text makes against the logs,
and compiles ``report/report.typ`` with Typst. A claim the logs no longer support stops
the build with a message naming it.
"""
import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cli import UserError, run_cli  # noqa: E402
from figures import save_figure  # noqa: E402
from runfiles import atomic_write, read_json, write_json  # noqa: E402

SEGMENTATION_RUNS = ["unet", "unet_cosine", "unet_noskip", "lr_1e-1", "lr_1e-2", "lr_1e-3", "lr_1e-4", "lr_1e-5",
                     "smp_pretrained", "smp_scratch", "aug_flip", "aug_affine", "aug_color", "aug_elastic",
                     "aug_combined"]
CLASSIFICATION_RUNS = ["mlp", "mobilenet", "mobilenet_probs"]
PHOTOGRAPHIC_FIGURES = ["blur", "edges", "unet_augmentations", "unet_predictions"]
HUMAN_DICE, MEDMNIST_RESNET18_ACC = 0.788, 0.907  # DRIVE's 2nd observer; MedMNIST v2's ResNet-18 (28)


def fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


# ----------------------------------------------------------------------------- reading the logs

def load_runs(root):
    runs = {}
    for name in ["convolution", *SEGMENTATION_RUNS, *CLASSIFICATION_RUNS]:
        folder = root / name
        if (folder / "results.json").exists():
            runs[name] = {"status": "done", **read_json(folder / "results.json")}
        elif (folder / "convolution_timings.json").exists():
            runs[name] = {"status": "done", **read_json(folder / "convolution_timings.json")}
        elif (folder / "not_run.json").exists():
            runs[name] = read_json(folder / "not_run.json")
        else:
            runs[name] = {"status": "not run", "reason": "this run has not been made yet"}
    return runs


def dice_at(run, epoch):
    """The thresholded test Dice after ``epoch`` epochs, from the run's curve."""
    if run.get("status") != "done" or epoch not in run["evaluated_epochs"]:
        return None
    return run["valid_dice_thresholded"][run["evaluated_epochs"].index(epoch)]


# ----------------------------------------------------------------------------- figures

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path):
    save_figure(fig, path, dpi=130, bbox_inches="tight")


def curves_figure(runs, names, labels, path, title, up_to=None):
    """Test Dice (thresholded) and training loss per epoch for several runs."""
    plt = _plt()
    fig, (ax_dice, ax_loss) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, label in zip(names, labels):
        r = runs[name]
        if r.get("status") != "done":
            continue
        epochs = np.arange(1, len(r["train_losses"]) + 1)
        keep = epochs <= (up_to or len(epochs))
        ev = np.array(r["evaluated_epochs"])
        ev_keep = ev <= (up_to or ev.max())
        line, = ax_dice.plot(ev[ev_keep], np.array(r["valid_dice_thresholded"])[ev_keep], "o-", ms=3, label=label)
        ax_loss.plot(epochs[keep], np.array(r["train_losses"])[keep], "-", color=line.get_color(), label=label)
    ax_dice.set_ylabel("test Dice (threshold 0.5)")
    ax_loss.set_ylabel("training DiceCE loss")
    low, high = ax_loss.get_ylim()
    if high > 100:  # a diverged run: its loss would flatten every other curve
        ax_loss.set_yscale("log")
    for ax in (ax_dice, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_dice.axhline(HUMAN_DICE, color="grey", ls=":", lw=1)
    ax_dice.text(0.02, HUMAN_DICE + 0.01, "2nd human observer", color="grey", fontsize=7,
                 transform=ax_dice.get_yaxis_transform())
    ax_dice.set_ylim(0, 0.9)
    ax_loss.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)


def speed_figure(timings, path):
    import convolution
    convolution.speed_figure(timings["records"], path)


def classification_figure(runs, path):
    plt = _plt()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name in CLASSIFICATION_RUNS:
        r = runs[name]
        if r.get("status") != "done":
            continue
        epochs = np.arange(1, len(r["train_losses"]) + 1)
        for ax, key in ((ax_loss, "losses"), (ax_acc, "accs")):
            line, = ax.plot(epochs, r[f"train_{key}"], "-", label=f"{name} train")
            ax.plot(epochs, r[f"valid_{key}"], "--", color=line.get_color(), label=f"{name} validation")
    for ax, label in ((ax_loss, "cross-entropy"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


# ----------------------------------------------------------------------------- architecture facts

def architecture_facts():
    """Parameter counts and per-stage output shapes, measured on the graded models."""
    import torch
    torch.set_num_threads(1)  # small work; leave the other core to any training running beside
    from mlp import MLP
    from mobileNet import MobileNet
    from unet import UNet

    def count(model):
        return sum(p.numel() for p in model.parameters())

    def shapes(model, x, names):
        seen = {}
        hooks = [getattr(model, n).register_forward_hook(
            lambda m, i, o, n=n: seen.__setitem__(n, "x".join(str(s) for s in o.shape[1:]))) for n in names]
        with torch.no_grad():
            model.eval()(x)
        for h in hooks:
            h.remove()
        return [{"layer": n, "shape": seen[n]} for n in names]

    mobilenet_layers = ["conv0", "dw_sep_conv0", "dw_sep_conv1", "dw_sep_conv2", "dw_sep_conv3", "dw_sep_conv4",
                        "dw_sep_conv5", "dw_sep_conv65", "dw_sep_conv7", "dw_sep_conv8", "avgpool", "fc"]
    unet_layers = ["encoder_block1", "encoder_block2", "encoder_block3", "encoder_block4", "encoder_block5",
                   "decoder_block1", "decoder_block2", "decoder_block3", "decoder_block4", "outconv"]
    mobilenet = MobileNet(9)
    # the same network with every depthwise-separable block replaced by a standard 3x3 conv
    standard = 3 * 3 * 3 * 32 + sum(9 * cin * cout for cin, cout in
                                    [(32, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)]
                                    + [(512, 512)] * 5 + [(512, 1024), (1024, 1024)])
    separable = sum(p.numel() for n, p in mobilenet.named_parameters() if "conv" in n and p.dim() == 4)
    return {
        "mlp_params": count(MLP(3 * 28 * 28, [1024, 512, 64, 64], 9)),
        "mobilenet_params_1000": count(MobileNet(1000)),
        "mobilenet_params_9": count(mobilenet),
        "mobilenet_conv_weights": separable,
        "standard_conv_weights": standard,
        "mobilenet_shapes_224": shapes(mobilenet, torch.randn(1, 3, 224, 224), mobilenet_layers),
        "mobilenet_shapes_28": shapes(mobilenet, torch.randn(2, 3, 28, 28), mobilenet_layers),
        "unet_params": count(UNet(3, 1)),
        "unet_noskip_params": count(UNet(3, 1, skip_connections=False)),
        "unet_shapes_512": shapes(UNet(3, 1), torch.randn(1, 3, 512, 512), unet_layers),
    }


# ----------------------------------------------------------------------------- numbers and claims

def segmentation_rows(runs, compare_epoch):
    rows = []
    for name in SEGMENTATION_RUNS:
        r = runs[name]
        if r.get("status") != "done":
            rows.append({"name": name, "status": "not run", "reason": r.get("reason", ""),
                         "command": r.get("command", "")})
            continue
        f, c = r["final_metrics"], r["config"]
        rows.append({
            "name": name, "status": "done", "model": c["model"], "optimizer": c["optimizer"], "lr": c["lr"],
            "augmentation": c["augmentation"], "epochs": r["epochs_completed"], "diverged": r["diverged"],
            "dice": fmt(f["dice"]), "accuracy": fmt(f["accuracy"]), "sensitivity": fmt(f["sensitivity"]),
            "specificity": fmt(f["specificity"]), "auc": fmt(f["auc"]),
            "dice_at_compare": fmt(dice_at(r, compare_epoch)),
            "minutes": fmt(r["timings"]["total_seconds"] / 60, 1),
            "train_minutes": fmt(sum(r["timings"]["train_seconds_per_epoch"]) / 60, 1),
            "params_m": fmt(r["n_parameters"] / 1e6, 1), "command": r["command"],
        })
    return rows


def collect(runs):
    n = {"generated": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
         "human_dice": fmt(HUMAN_DICE), "medmnist_acc": fmt(MEDMNIST_RESNET18_ACC)}
    conv = runs["convolution"]
    if conv.get("status") == "done":
        recs = conv["records"]
        seconds = {(r["method"], r["image_size"], r["kernel_size"]): r.get("seconds") for r in recs}
        big = conv["bars"]["image_size"]
        n["conv"] = {
            "size": big, "ours_over_scipy": fmt(conv["bars"]["ours_over_scipy"], 2),
            "scipy_over_ours": fmt(1 / conv["bars"]["ours_over_scipy"], 1),
            "loop_over_ours": f"{conv['bars']['loop_over_ours']['ratio']:.0f}",
            "loop_size": conv["bars"]["loop_over_ours"]["image_size"],
            "by_kernel": [{"k": k, "ratio": fmt(1 / v, 1)} for k, v in conv["bars"]["ours_over_scipy_by_kernel"].items()],
            "kmax": max(conv["config"]["kernel_sizes"]),
            "table": [{"method": m, "ms": [fmt(1000 * seconds[(m, big, k)], 2) if seconds.get((m, big, k)) else "skipped"
                                           for k in (3, max(conv["config"]["kernel_sizes"]))]}
                      for m in dict.fromkeys(r["method"] for r in recs)],
            "agree": conv["all_methods_agree"], "cpu": conv["machine"]["cpu"],
            "blur_hf": fmt(100 * conv["blur"]["high_frequency_energy_ratio"], 1),
            "gaussian_size": conv["blur"]["gaussian_size"],
        }
    return n


def bench_numbers(folder):
    """The training-step benchmark and the full-epoch timings, when they were run."""
    path = folder / "bench_cpu.json"
    if not path.exists():
        return None
    bench = read_json(path)
    rows = [{"model": r["model"], "config": r["config"], "seconds": f"{r['seconds_per_step']:.3f}",
             "tflops": f"{r['tflops']:.2f}", "speedup": f"{r['speedup']:.2f}"} for r in bench["results"]]
    epochs = {}
    for model in ("mlp", "mobilenet"):
        timing = folder / f"epoch_timing_synthetic_{model}.json"
        if timing.exists():
            t = read_json(timing)
            epochs[model] = {"seconds": f"{t['timings']['train_seconds_per_epoch'][0]:.0f}",
                             "n": t["n_samples"]["train"], "command": t["command"]}
    return {"rows": rows, "cpu": bench["machine"]["cpu"], "command": bench["command"], "date": bench["date"],
            "torch": bench["versions"]["torch"], "epochs": epochs}


# ----------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/cpu", help="the folder of one profile's runs")
    parser.add_argument("--out", default=str(HERE / "report.pdf"))
    args = parser.parse_args()
    root = Path(args.runs)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; run experiments.py first or pass --runs runs/<profile>")
    runs = load_runs(root)
    figures, generated = HERE / "figures", HERE / "generated"
    figures.mkdir(exist_ok=True)
    generated.mkdir(exist_ok=True)

    import report_content  # the claims and numbers that depend on the experiments
    numbers = collect(runs)
    numbers["arch"] = architecture_facts()
    numbers.update(report_content.segmentation_numbers(runs, segmentation_rows, dice_at, fmt))
    numbers.update(report_content.classification_numbers(runs, fmt))
    numbers.update(report_content.discussion(runs, dice_at, fmt))
    numbers["profile"] = root.name
    numbers["bench"] = bench_numbers(root / "bench")

    if runs["convolution"].get("status") == "done":
        import convolution
        speed_figure(runs["convolution"], figures / "convolution_speed.png")
        # blur and edges are cheap, deterministic functions of the run's photograph: redraw them
        photo = runs["convolution"]["config"]["image"]
        image = convolution.load_grayscale(None if photo.startswith("matplotlib") else photo)
        convolution.blur_figure(image, figures / "blur.png")
        convolution.edges_figure(image, figures / "edges.png")
    report_content.segmentation_figures(runs, root, figures, curves_figure)
    if any(runs[n].get("status") == "done" for n in CLASSIFICATION_RUNS):
        classification_figure(runs, figures / "classification_curves.png")

    # Photographs compress tenfold as JPEG, which keeps the committed PDF small.
    for name in PHOTOGRAPHIC_FIGURES:
        png = figures / f"{name}.png"
        if png.exists():
            from PIL import Image
            with Image.open(png) as im:
                im.convert("RGB").save(figures / f"{name}.jpg", quality=85)
            png.unlink()

    failed = [claim for claim, holds in report_content.claims(runs, dice_at) if not holds]
    if failed:
        raise UserError("the logs no longer support these claims of the report: " + "; ".join(failed) +
                        ". Rewrite the discussion in report/report.typ and report/report_content.py")
    write_json(generated / "numbers.json", numbers)

    import typst
    out = Path(args.out)
    try:
        atomic_write(out, lambda tmp: typst.compile(str(HERE / "report.typ"), output=tmp, root=str(HERE)))
    except typst.TypstError as err:
        raise UserError(f"report/report.typ does not compile: {str(err).splitlines()[0]}; fix the source "
                        f"(numbers it reads are in report/generated/numbers.json)")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    run_cli(main)
