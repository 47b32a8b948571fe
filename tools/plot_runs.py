"""
Overlay the training curves of several runs in one figure, e.g. MLP against MobileNet:

    python -m tools.plot_runs runs/cpu/mlp runs/cpu/mobilenet --out mlp_vs_mobilenet.png

Each RUN is a folder holding the results.json that a training script wrote.
"""
import argparse
from pathlib import Path

import numpy as np

from medimg.cli import UserError, run_cli
from medimg.figures import plot_panels, pyplot
from medimg.runfiles import read_json


def load_runs(folders):
    runs = {}
    for folder in folders:
        path = Path(folder) / "results.json"
        if not path.exists():
            raise UserError(f"{path}: not found; each RUN must be a folder with a finished run's results.json")
        runs[Path(folder).name] = read_json(path)
    return runs


def overlay(runs, out, accuracy_label="accuracy", title=""):
    """Loss and accuracy against epoch, one colour per run: train solid, validation dashed."""
    colours = pyplot().rcParams["axes.prop_cycle"].by_key()["color"] * 4
    panels = []
    for key, label in (("losses", "loss"), ("accs", accuracy_label)):
        curves = []
        for (name, r), colour in zip(runs.items(), colours):
            epochs = np.arange(1, len(r["train_losses"]) + 1)
            valid_epochs = r.get("evaluated_epochs") or epochs[:len(r["valid_losses"])]
            curves += [(f"{name} train", epochs, r[f"train_{key}"], {"color": colour, "ls": "-"}),
                       (f"{name} validation", valid_epochs, r[f"valid_{key}"], {"color": colour, "ls": "--"})]
        panels.append((label, curves))
    plot_panels(panels, out, title, legend_fontsize=7)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (each with results.json)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--accuracy_label", default="accuracy")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    overlay(load_runs(args.runs), args.out, args.accuracy_label, args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
