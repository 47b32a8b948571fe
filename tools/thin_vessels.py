"""
How well each run finds thin vessels and thick ones, from the test predictions it saved.

    python -m tools.thin_vessels runs/cpu_whole/unet runs/cpu_whole/aug_none --data data/retina

A vessel pixel of a test mask is *thick* where a square of vessel pixels covers it (it survives
a binary opening of the mask by that square) and *thin* otherwise: the vessels narrower than the
square, and the rims and ends of wider ones. The square is 3 pixels of a 512-px image (the course's
size), scaled to the size the run was trained and evaluated at and rounded up, at least 2: 3 px at
512, 2 px at 256 (where the masks are resized as the run resized them, by nearest neighbour), so
that thin means about the same vessels at either size (a third of the vessel pixels of the DRIVE
test masks at 256 px, 29% at 512 px). The *recall* of each is the share of its pixels that the
run's thresholded prediction marks as vessel, per test image; beside them, its *precision*, the
share of the pixels it marks that are vessel (a recall bought by marking more shows there): per
image where it marks any (None where it marks none), and pooled over all the images (None where it
marks no pixel at all).

Writes ``RUN/thin_vessels.json`` beside the run's ``results.json``: per image and averaged
over the images, each recall and the share of the vessel pixels that are thin, with the
command, machine, date and duration. Before anything is written, the saved predictions must
reproduce the run's own per-image Dice against the test masks of ``--data`` (the same images,
resized alike); a run that holds the file already is left as it is.
"""
import argparse
import datetime
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from medimg.cli import UserError, run_cli
from medimg.figures import load_mask_pages
from medimg.machine import machine_info
from medimg.retina import load_split
from medimg.runfiles import read_json, write_json
from medimg.segmentation_metrics import thresholded_dice

WIDTH_AT_512 = 3  # the side of the square a thick vessel pixel lies under, in pixels of a 512-px image
FILE = "thin_vessels.json"


def square_side(height: int, width: int) -> int:
    """``WIDTH_AT_512`` pixels of a 512-px image, at an image of ``height`` x ``width``: rounded up, at least 2."""
    return max(2, math.ceil(WIDTH_AT_512 * min(height, width) / 512))


def split_by_width(truth: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A boolean mask ``[H, W]`` as ``(thin, thick)``: thick the pixels that a ``width`` x
    ``width`` square of vessel pixels covers (the mask opened by that square), thin the rest."""
    thick = ndimage.binary_opening(truth, structure=np.ones((width, width), dtype=bool)) & truth
    return truth & ~thick, thick


def recall(pred: np.ndarray, truth: np.ndarray):
    """The share of ``truth``'s pixels that ``pred`` marks, or None where ``truth`` is empty."""
    n = int(truth.sum())
    return float((pred & truth).sum() / n) if n else None


def measure(run: Path, data: Path) -> dict:
    """The thin and thick recall of one finished run, per test image and averaged; a
    UserError where its predictions and the data disagree."""
    results = read_json(run / "results.json")
    recorded = results["final_metrics"]["per_image_dice"]
    size = results["config"].get("image_size", 0)
    predictions = run / "test_predictions.tif"
    if not predictions.exists():
        raise UserError(f"{predictions}: not found; only runs that saved their test predictions can be measured")
    names, _, masks, sizes = load_split(data / "test", size)
    if names != list(recorded):
        raise UserError(f"{data / 'test'}: holds {len(names)} test images ({', '.join(names[:2])}, ...), not the "
                        f"{len(recorded)} the run was scored on; give the data the run was made with")
    pages = load_mask_pages(predictions)
    if len(pages) != len(names):
        raise UserError(f"{predictions}: {len(pages)} pages for {len(names)} test images; the run's files are incomplete")
    per_image, marked, hits = {}, 0, 0
    for name, pred, mask, (h, w) in zip(names, pages, masks, sizes):
        truth = mask[0, :h, :w].numpy().astype(bool)
        if pred.shape != truth.shape or abs(thresholded_dice(pred, truth) - recorded[name]) > 1e-9:
            raise UserError(f"{predictions}: its prediction of {name} does not reproduce the run's Dice "
                            f"({recorded[name]:.6f}) against {data / 'test'} at {size or 'full'} px; give the "
                            f"data the run was made with")
        marked, hits = marked + int(pred.sum()), hits + int((pred & truth).sum())
        side = square_side(h, w)
        thin, thick = split_by_width(truth, side)
        per_image[name] = {"square": side, "thin_recall": recall(pred, thin), "thick_recall": recall(pred, thick),
                           "thin_share": float(thin.sum() / max(truth.sum(), 1)),
                           # the share of the marked pixels that are vessel: a recall bought by marking more is seen
                           "precision": recall(truth, pred)}

    def mean(key):
        values = [v[key] for v in per_image.values() if v[key] is not None]
        return float(np.mean(values)) if values else None
    return {"thin_recall": mean("thin_recall"), "thick_recall": mean("thick_recall"),
            "thin_share": mean("thin_share"), "precision": hits / marked if marked else None, "per_image": per_image}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (results.json, test_predictions.tif)")
    parser.add_argument("--data", type=Path, default=Path("data/retina"), help="the retina folder the runs were made on")
    args = parser.parse_args(argv)
    if not (args.data / "test").is_dir():
        raise UserError(f"{args.data / 'test'}: folder not found; --data must be the retina folder (test/image, test/mask)")
    for run in args.runs:
        if not (run / "results.json").exists():
            raise UserError(f"{run / 'results.json'}: not found; give the folders of finished runs")
    command = " ".join(["python -m tools.thin_vessels", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    todo = []
    for run in args.runs:  # every run measured before any file is written: one bad run writes nothing
        if (run / FILE).exists():
            print(f"{run / FILE}: measured already, left as it is")
            continue
        start = time.perf_counter()
        todo.append((run, measure(run, args.data), time.perf_counter() - start))
    shown = lambda x, form: "n/a" if x is None else format(x, form)
    for run, measured, seconds in todo:
        write_json(run / FILE, {
            "definition": f"thick: the vessel pixels that a square of vessel pixels covers (the test mask, at the run's "
                          f"image size, opened by a square of {WIDTH_AT_512} px of a 512-px image, rounded up, at least 2: "
                          f"'square' per image); thin: the other vessel pixels; recall: the share of them that the "
                          f"thresholded prediction marks, per test image, then the mean over images",
            "image_size": read_json(run / "results.json")["config"].get("image_size", 0),
            **measured, "command": command, "machine": machine_info("cpu"),
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3)})
        print(f"{run / FILE}: thin recall {shown(measured['thin_recall'], '.3f')}, thick "
              f"{shown(measured['thick_recall'], '.3f')} (thin: {shown(measured['thin_share'], '.0%')} of the vessel "
              f"pixels), precision {shown(measured['precision'], '.3f')}")

if __name__ == "__main__":
    run_cli(main)
